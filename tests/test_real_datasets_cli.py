"""`python -m mmkeras.train --config` on the real datasets (one short epoch each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).parents[1] / "data_pipelines" / "configs"


@pytest.mark.parametrize(("name", "classes"), [("avdigits", 10), ("mobifall", 11)])
def test_train_cli_on_real_dataset(name, classes, data_dir, tmp_path):
    out = tmp_path / name
    env = {**os.environ, "MMKERAS_DATA_DIR": str(data_dir.resolve())}
    proc = subprocess.run(
        [sys.executable, "-m", "mmkeras.train", "--config", str(CONFIGS / f"{name}.yaml"),
         "epochs=1", "verbose=2", "--output", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "quarantine:" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["class_names"]) == classes
    assert metrics["num_examples"] > 100
    assert json.loads((out / "export_validation.json").read_text())["ok"] is True
    assert (out / "quarantine.csv").read_text().startswith("record,reason")
