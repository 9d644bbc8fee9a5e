"""Two-worker training with MultiWorkerMirroredStrategy: two processes on 127.0.0.1.

Each worker builds the tiny machine model (same seed, no dropout), trains it with
``mmkeras.training.loop.fit_custom`` and writes its history and final weights to its own file.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmkeras.training.strategy import is_chief
from tests.conftest import TINY_MACHINE

# The tiny machine model and datasets, as the trainer builds them (no dropout: deterministic).
SETUP = """
import json, sys
import keras
from data_pipelines.machine import load
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.models import build_models
from mmkeras.training.trainer import feature_dataset

def prepare(cache, modalities=None):
    dataset = load(cache_dir=cache, **TINY_MACHINE)
    dataset = dataset.select(modalities or list(dataset.modalities))
    return dataset, fit_preprocessing(dataset, "train")

def build(strategy, dataset, state, encoders=None, seed=0):
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        pre, task = build_models(dataset.modalities, state, len(dataset.class_names),
                                 encoders=encoders, embed_dim=16, dropout=0.0,
                                 modality_dropout=0.0, seed=seed)
        losses, weights = task.losses_and_weights()
        model = task.training_model()
        accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=losses,
                      loss_weights=weights, metrics={"probabilities": [accuracy]})
    return pre, model

def datasets(pre, dataset, batch, shuffle=True, seed=0):
    return (feature_dataset(pre, dataset, "train", batch, None, shuffle=shuffle, seed=seed),
            feature_dataset(pre, dataset, "val", batch, None))
"""

WORKER = """
from mmkeras.training.strategy import get_strategy, is_chief
strategy = get_strategy("multi_worker")  # first, before any other TensorFlow operation
import numpy as np
from mmkeras.training.loop import fit_custom
TINY_MACHINE = json.loads(sys.argv[2])
dataset, state = prepare(sys.argv[3])
pre, model = build(strategy, dataset, state)
train, val = datasets(pre, dataset, batch=16)
history = fit_custom(model, train, validation_data=val, epochs=3, strategy=strategy)
np.savez(sys.argv[1] + ".npz", *model.get_weights())
with open(sys.argv[1] + ".json", "w") as f:
    json.dump({"history": history.history, "chief": is_chief(strategy),
               "replicas": strategy.num_replicas_in_sync,
               "examples": [t.examples for t in history.timing],
               "train_examples": dataset.num_examples("train")}, f)
"""


ROOT = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(commands: list[list[str]], cwd, env=None, timeout: float = 600) -> list[str]:
    """Run one process per command, each with its own ``TF_CONFIG`` (worker ``i``), all on
    127.0.0.1; wait for all (``timeout`` in total), always kill leftovers; their outputs."""
    ports = free_ports(len(commands))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for i, command in enumerate(commands):
            task_env = {**os.environ, **(env or {}), "TF_CPP_MIN_LOG_LEVEL": "3",
                        "TF_CONFIG": json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": i}})}
            procs.append(subprocess.Popen(command, env=task_env, cwd=cwd, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        logs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    return logs


def test_two_workers_train_identically(tmp_path, tiny_machine, cache_dir):
    outputs = [str(tmp_path / f"worker{i}") for i in range(2)]
    script = [sys.executable, "-c", SETUP + WORKER]
    run_workers([[*script, out, json.dumps(TINY_MACHINE), str(cache_dir)] for out in outputs],
                cwd=ROOT)
    results = [json.loads(Path(o + ".json").read_text()) for o in outputs]
    chief, other = results
    assert (chief["chief"], other["chief"]) == (True, False)
    assert chief["replicas"] == 2
    loss = chief["history"]["loss"]
    assert loss[-1] < 0.8 * loss[0], loss
    # every epoch consumed the whole training split once, across both workers together
    assert chief["examples"] == [chief["train_examples"]] * 3
    # metrics are aggregated over both workers: each reports the same numbers
    assert chief["history"] == other["history"]
    assert set(chief["history"]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    w0, w1 = (np.load(o + ".npz") for o in outputs)
    assert len(w0.files) == len(w1.files) > 10
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])


@pytest.mark.parametrize("kind", ["mirrored", "default"])
def test_is_chief_without_cluster(kind):
    from mmkeras.training.strategy import get_strategy

    assert is_chief(get_strategy(kind))


def test_cli_multi_worker_only_chief_writes(tmp_path, tiny_machine, cache_dir):
    """``python -m mmkeras.train strategy=multi_worker`` on two workers, each given its own
    ``output``: the chief's folder is a complete run, the other worker's stays empty."""
    args = ["epochs=2", "verbose=0", "strategy=multi_worker", "dropout=0",
            "dataset_args=" + json.dumps(TINY_MACHINE)]
    outputs = [tmp_path / f"run{i}" for i in range(2)]
    run_workers([[sys.executable, "-m", "mmkeras.train", *args, f"output={out}"]
                 for out in outputs], cwd=tmp_path, env={"MMKERAS_CACHE": str(cache_dir)})
    chief, other = outputs
    assert (chief / "export" / "mmkeras_model" / "1" / "saved_model.pb").is_file()
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    history = (chief / "history.csv").read_text().splitlines()
    assert len(history) == 3, history  # header + 2 epochs
    assert not other.exists() or not any(p.is_file() for p in other.rglob("*"))
