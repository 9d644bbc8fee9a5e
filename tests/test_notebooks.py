"""Every notebook runs top to bottom (small settings: MMKERAS_QUICK=1), in a scratch folder."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, cache_dir, data_dir, monkeypatch):
    monkeypatch.setenv("MMKERAS_QUICK", "1")
    monkeypatch.setenv("MMKERAS_CACHE", str(cache_dir))
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(data_dir.resolve()))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
