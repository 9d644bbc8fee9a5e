"""Two CPU runs with the same seed give identical metrics and history; run facts are recorded."""

import json
import os
import re
import subprocess
import sys

import yaml

from mmkeras.training.callbacks import read_history_csv
from tests.conftest import TINY_MACHINE

ARGS = [*(f"dataset_args.{k}={v}" for k, v in TINY_MACHINE.items()), "epochs=2", "embed_dim=16",
        "batch_size=8", "seed=7", "dropout=0.3", "modality_dropout=0.3", "verbose=0"]
TIMING = ("examples_per_second",)  # wall-clock columns, the only ones allowed to differ


def test_same_seed_same_results(tmp_path, cache_dir):
    env = {**os.environ, "MMKERAS_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([sys.executable, "-m", "mmkeras.train", *ARGS, "--output", str(o)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path) for o in outs]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs]
    assert metrics[0] == metrics[1]
    histories = [read_history_csv(o / "history.csv") for o in outs]
    for key in histories[0]:
        if key not in TIMING:
            assert histories[0][key] == histories[1][key], key
    assert len(histories[0]["loss"]) == 2 and histories[0]["loss"][0] != histories[0]["loss"][1]

    info = json.loads((outs[0] / "run_info.json").read_text())
    assert info["config"] == yaml.safe_load((outs[0] / "config.yaml").read_text())
    assert info["config"]["seed"] == 7
    assert set(info["versions"]) >= {"python", "tensorflow", "keras", "numpy", "mmkeras"}
    assert info["versions"]["tensorflow"].startswith("2.")
    assert info["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
    (invocation,) = info["invocations"]
    assert invocation["argv"][-2:] == ["--output", str(outs[0])] and "seed=7" in invocation["argv"]
    assert invocation["replicas"] == 1 and invocation["global_batch_size"] == 8
