"""Training under MirroredStrategy with two replicas (the CPU split into 2 logical devices)."""

import json
import os
import subprocess
import sys

from tests.conftest import TINY_MACHINE

SCRIPT = """
import json, sys
from mmkeras.training.strategy import split_cpu
split_cpu(2)
from mmkeras.config import resolve_config
from mmkeras.training.trainer import train
from data_pipelines.machine import load
args = json.loads(sys.argv[2])
train(resolve_config(None, ["epochs=1", "verbose=0", "output=" + sys.argv[1]]),
      dataset=load(**args))
"""


def test_two_replica_mirrored_training(tmp_path, cache_dir):
    env = {**os.environ, "MMKERAS_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run"), json.dumps(TINY_MACHINE)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert metrics["num_examples"] == sum(map(sum, metrics["confusion_matrix"]))
    assert (tmp_path / "run" / "export" / "mmkeras_model" / "1" / "saved_model.pb").is_file()
