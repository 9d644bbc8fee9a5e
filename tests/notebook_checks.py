"""Execute a notebook and check its figures: every figure is shown, no axes is empty.

:func:`run_notebook` executes an in-memory copy of a notebook with nbclient after a first cell
that loads this file inside the kernel and calls :func:`install`. The committed notebook is
never modified. :func:`install` records, per cell (by execution count):

* every ``matplotlib.figure.Figure`` created (pyplot or not);
* every render of a figure for display (``canvas.print_figure`` outside ``savefig``: the
  inline backend and IPython's ``Figure`` formatter both go through it) with its number of
  axes, and every ``savefig``;
* at each render, the axes that hold no artist with data (:func:`axes_without_data`).

:func:`figure_problems` turns that record and the executed notebook into a list of problems:
an axes without data, a cell that rendered a figure but has no image output, and a figure
that was created but never displayed nor saved (e.g. pyplot switched to Agg by a library).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_TYPES = ("image/png", "image/svg+xml", "image/jpeg")


def _finite_rows(xy: Any) -> bool:
    a = np.asarray(xy, dtype=float)
    return a.size > 0 and bool(np.isfinite(a.reshape(len(a), -1)).all(axis=1).any())


def _has_data(artist: Any) -> bool:
    from matplotlib.collections import PathCollection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    if isinstance(artist, Line2D):
        return _finite_rows(artist.get_xydata())
    if isinstance(artist, AxesImage):
        array = artist.get_array()
        return array is not None and array.size > 0
    if isinstance(artist, Rectangle):
        return artist.get_width() != 0 and artist.get_height() != 0
    if isinstance(artist, PathCollection):  # scatter: its paths are the marker, not the data
        return _finite_rows(artist.get_offsets())
    if hasattr(artist, "get_paths"):  # line, poly, event collections, quad meshes
        array = artist.get_array() if hasattr(artist, "get_array") else None
        if array is not None and np.size(array) > 0:
            return True
        return any(_finite_rows(p.vertices) for p in artist.get_paths())
    return True  # other patches (polygons, wedges, spans)


def axes_without_data(fig: Any) -> list[str]:
    """Descriptions of the axes of ``fig`` that hold no line, collection, image or patch
    with data (texts, titles and legends do not count)."""
    empty = []
    for i, ax in enumerate(fig.axes):
        artists = [*ax.lines, *ax.collections, *ax.images, *ax.patches]
        if not any(_has_data(a) for a in artists):
            title = fig._suptitle.get_text() if fig._suptitle else ""
            empty.append(f"figure {title!r} axes {i} (title {ax.get_title()!r}, "
                         f"ylabel {ax.get_ylabel()!r}, {len(artists)} artists, none with data)")
    return empty


def install(shell: Any, report_path: str) -> None:
    """Inside a kernel: record figures per cell into ``report_path`` (JSON, after each cell)."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure

    # records are keyed by a running cell number until post_run_cell gives the execution count
    state: dict[str, Any] = {"cell": 0, "saving": 0}
    execution_counts: dict[int, int] = {}
    cells: dict[int, dict[str, Any]] = {}
    created: list[tuple[int, Any]] = []  # strong references: ids stay unique
    shown: set[int] = set()

    def cell() -> dict[str, Any]:
        return cells.setdefault(state["cell"], {"created": 0, "displayed": 0, "saved": 0,
                                                "axes_displayed": [], "empty_axes": []})

    init, print_figure, savefig = Figure.__init__, FigureCanvasBase.print_figure, Figure.savefig

    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        created.append((state["cell"], self))
        cell()["created"] += 1

    def recording_print_figure(self: Any, *args: Any, **kwargs: Any) -> Any:
        fig = self.figure
        shown.add(id(fig))
        cell()["saved" if state["saving"] else "displayed"] += 1
        if not state["saving"]:
            cell()["axes_displayed"].append(len(fig.axes))
        cell()["empty_axes"].extend(axes_without_data(fig))
        return print_figure(self, *args, **kwargs)

    def recording_savefig(self: Any, *args: Any, **kwargs: Any) -> Any:
        state["saving"] += 1
        try:
            return savefig(self, *args, **kwargs)
        finally:
            state["saving"] -= 1

    def pre_run_cell(info: Any) -> None:
        state["cell"] += 1

    def post_run_cell(result: Any) -> None:
        execution_counts[state["cell"]] = result.execution_count
        count = execution_counts.get
        never = [{"cell": count(c), "figure": repr(f)} for c, f in created if id(f) not in shown]
        by_count = {count(c): r for c, r in cells.items() if c in execution_counts}
        Path(report_path).write_text(json.dumps({"cells": by_count, "never_shown": never}))

    Figure.__init__ = recording_init
    FigureCanvasBase.print_figure = recording_print_figure
    Figure.savefig = recording_savefig
    shell.events.register("pre_run_cell", pre_run_cell)
    shell.events.register("post_run_cell", post_run_cell)


def hook_cell_source(report_path: Path) -> str:
    """The first cell injected into the executed copy: loads this file and calls install."""
    return (
        "import importlib.util as _u\n"
        f"_s = _u.spec_from_file_location('_figure_check', {str(Path(__file__))!r})\n"
        "_m = _u.module_from_spec(_s)\n"
        "_s.loader.exec_module(_m)\n"
        f"_m.install(get_ipython(), {str(report_path)!r})\n"
        "del _u, _s, _m"
    )


def run_notebook(path: Path, workdir: Path, env: dict[str, str], timeout: int = 600):
    """Execute a copy of ``path`` in ``workdir``; return the executed copy and the figure record.

    Raises nbclient's ``CellExecutionError`` when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    report_path = workdir / f"{Path(path).stem}.figures.json"
    nb.cells.insert(0, nbformat.v4.new_code_cell(hook_cell_source(report_path)))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    report = json.loads(report_path.read_text())
    report["cells"] = {int(k): v for k, v in report["cells"].items()}
    return nb, report


def figure_problems(nb: Any, report: dict[str, Any]) -> list[str]:
    """What is wrong with the figures of an executed notebook (empty list: nothing)."""
    problems = []
    for index, c in enumerate(nb.cells[1:], start=1):
        if c.cell_type != "code" or c.execution_count not in report["cells"]:
            continue
        record = report["cells"][c.execution_count]
        where = f"cell {index} ({c.source.strip().splitlines()[0][:60]!r})"
        images = [o for o in c.outputs if any(t in o.get("data", {}) for t in IMAGE_TYPES)]
        if record["displayed"] and not images:
            problems.append(f"{where}: rendered {record['displayed']} figure(s), no image output")
        problems.extend(f"{where}: {e}" for e in record["empty_axes"])
    by_count = {c.execution_count: i for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    for item in report["never_shown"]:
        index = by_count.get(item["cell"], "?")
        problems.append(f"cell {index}: {item['figure']} created but never displayed nor saved")
    return problems
