"""Every notebook runs top to bottom (small settings: MMKERAS_QUICK=1) in a scratch folder, and
its figures are checked: each one is shown (an image output), none has an empty axes.

``test_figure_check_catches_bad_figures`` shows the check fails on a notebook with an empty
plot, an empty line, a figure hidden by ``matplotlib.use("Agg")`` and a figure never displayed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.notebook_checks import IMAGE_TYPES, figure_problems, run_notebook

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture
def notebook_env(tmp_path, cache_dir, data_dir, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("MMKERAS_QUICK", "1")
    monkeypatch.setenv("MMKERAS_CACHE", str(cache_dir))
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(data_dir.resolve()))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    return dict(os.environ)


def _markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def _images(cell) -> int:
    return sum(any(t in o.get("data", {}) for t in IMAGE_TYPES) for o in cell.outputs)


def _check_quickstart(nb, report) -> None:
    """Notebook 01: the raw streams figure (vibration, audio, temperature and humidity, notes)
    and, after training, the learning curves and the confusion matrix inline."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    raw = next(c for c in code if "rec.streams" in c.source and "subplots" in c.source)
    assert _images(raw) == 1
    # clock offsets, vibration, audio, temperature (+ humidity twin axes), notes
    assert report["cells"][raw.execution_count]["axes_displayed"] == [6]
    after = next(c for c in code if "plot_confusion(" in c.source)
    assert _images(after) == 2, "learning curves and confusion matrix shown inline"


EXTRA_CHECKS = {"01_quickstart.ipynb": _check_quickstart}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_figures(path, tmp_path, notebook_env):
    nb, report = run_notebook(path, tmp_path, notebook_env)
    assert figure_problems(nb, report) == []
    displayed = sum(r["displayed"] for r in report["cells"].values())
    assert displayed >= 1, f"{path.name} shows no figure"

    intro = _markdown(nb)[0].lower()
    assert "run time" in intro and "small" in intro and "full" in intro, (
        f"{path.name}: the first cell must state what it shows and its run time, small and full"
    )
    last = nb.cells[-1]
    assert last.cell_type == "code", f"{path.name} must end with a code cell printing a table"
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for o in last.outputs)
    rows = [line for line in text.splitlines() if line.strip()]
    assert len(rows) >= 3, f"{path.name}: the last cell prints no table of key numbers: {text!r}"
    if path.name in EXTRA_CHECKS:
        EXTRA_CHECKS[path.name](nb, report)


SCRATCH_CELLS = {
    "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
    "from mmkeras.training.plots import plot_history": "ok",
    "plot_history({'loss': [1.0, 0.5], 'val_loss': [1.1, 0.7]})": "ok",
    "fig, ax = plt.subplots()\nax.plot([0, 1], [1, 2])": "ok",
    "fig, ax = plt.subplots()\nax.set_title('nothing drawn')": "empty",
    "fig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2])\nb.plot([], [])": "empty",
    "from matplotlib.figure import Figure\nunshown = Figure()\nunshown.subplots().plot([1, 2])":
        "never",
    "import matplotlib\nmatplotlib.use('Agg')\nfig, ax = plt.subplots()\nax.plot([1, 2])": "never",
}


def test_figure_check_catches_bad_figures(tmp_path, notebook_env):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in SCRATCH_CELLS]
    path = tmp_path / "scratch.ipynb"
    nbformat.write(nb, path)
    executed, report = run_notebook(path, tmp_path, notebook_env)
    problems = figure_problems(executed, report)
    flagged = {int(p.split()[1].rstrip(":")) for p in problems}
    expected = {i for i, kind in enumerate(SCRATCH_CELLS.values(), start=1) if kind != "ok"}
    assert flagged == expected, problems
    assert sum("never displayed" in p for p in problems) == 2
    assert sum("axes" in p and "none with data" in p for p in problems) == 2
    # the library's plot and the pyplot plot after it are shown inline
    assert _images(executed.cells[2]) == 1 and _images(executed.cells[3]) == 1
