"""Run folders: atomic writes, refusals, collision-free names, the epoch backup, TensorBoard logs.

The backup tests train a small real Keras model; the collision test starts real processes that
create their run folders in the same second.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.config import resolve_config
from mmkeras.training.callbacks import (
    MANIFEST,
    EpochScalars,
    NonFiniteLoss,
    NonFiniteLossError,
    RunBackup,
    read_history_csv,
)
from mmkeras.training.runfiles import (
    RunFolderError,
    atomic_path,
    comparable,
    open_run_dir,
    write_state,
)
from mmkeras.training.trainer import _optimizer
from tests.conftest import tensorboard_scalars


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("metrics.json")
        tmp.write_text("new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


SAME_SECOND = """
import sys, time
from mmkeras.training.runfiles import open_run_dir
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
path, state = open_run_dir(None, sys.argv[1], "machine", {})
print(path)
"""


def test_default_run_folders_never_collide(tmp_path):
    start = int(time.time()) + 4.2  # after every process has started, well inside one second
    procs = [subprocess.Popen([sys.executable, "-c", SAME_SECOND, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    paths = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(paths)) == 4 and all(os.path.isdir(p) for p in paths)
    base = time.strftime("machine-%Y%m%d-%H%M%S", time.localtime(start))
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        [base, f"{base}-2", f"{base}-3", f"{base}-4"])


def test_open_run_dir_refusals(tmp_path):
    cfg = resolve_config(None, ["epochs=3"]).to_dict()
    run = tmp_path / "run"
    path, state = open_run_dir(str(run), "runs", "machine", cfg)  # missing: fresh
    assert path == run and run.is_dir() and state is None
    write_state(run, "training", config=comparable(cfg))
    (run / "config.yaml").write_text("epochs: 3\n")
    # same config, a field that does not change results: resumes
    quiet = resolve_config(None, ["epochs=3", "verbose=0", "strict=true"]).to_dict()
    assert open_run_dir(str(run), "runs", "machine", quiet)[1]["stage"] == "training"
    other = resolve_config(None, ["epochs=5", "fusion=gated", "dataset_args.n_machines=8"])
    with pytest.raises(RunFolderError) as err:
        open_run_dir(str(run), "runs", "machine", other.to_dict())
    message = str(err.value)
    assert "epochs: 3 -> 5" in message and "fusion: 'sum' -> 'gated'" in message
    assert "dataset_args.n_machines: '<unset>' -> 8" in message and "\n" not in message
    assert "verbose" not in message
    write_state(run, "done")
    with pytest.raises(RunFolderError, match="finished run: use --overwrite"):
        open_run_dir(str(run), "runs", "machine", cfg)
    write_state(run, "failed", error="non-finite training loss")
    with pytest.raises(RunFolderError, match=r"failed run \(non-finite training loss"):
        open_run_dir(str(run), "runs", "machine", cfg)
    path, state = open_run_dir(str(run), "runs", "machine", cfg, overwrite=True)
    assert state is None and list(run.iterdir()) == []
    stranger = tmp_path / "home"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # never cleared: it holds no run
        with pytest.raises(RunFolderError, match="holds no mmkeras run"):
            open_run_dir(str(stranger), "runs", "machine", cfg, overwrite=overwrite)
    assert (stranger / "notes.txt").read_text() == "mine"


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n: int = 64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")


class _Snapshot(keras.callbacks.Callback):
    """Weights and optimizer iterations at the start of each epoch."""

    def __init__(self):
        super().__init__()
        self.at = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.at[epoch] = (self.model.get_weights(), int(self.model.optimizer.iterations))


def test_backup_restores_weights_optimizer_and_epoch(tmp_path):
    x, y = _data()
    first = _model()
    early = keras.callbacks.EarlyStopping("val_loss", patience=5, restore_best_weights=True)
    backup = RunBackup(tmp_path / "backup", tmp_path / "history.csv", 2, early)
    assert backup.restore(first) == 0
    first.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
              callbacks=[early, backup])
    weights, iterations = first.get_weights(), int(first.optimizer.iterations)
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    assert manifest["epoch"] == 2 and manifest["iterations"] == iterations == 6
    # a later process: a new model, three epochs asked, resumes at the third
    second = _model(seed=1)
    early2 = keras.callbacks.EarlyStopping("val_loss", patience=5, restore_best_weights=True)
    snap, seen = _Snapshot(), {}
    backup2 = RunBackup(tmp_path / "backup", tmp_path / "history.csv", 3, early2)
    watch = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.update(
        best=early2.best, best_epoch=early2.best_epoch, wait=early2.wait))
    start = backup2.restore(second)
    assert start == 2
    history = second.fit(x, y, batch_size=16, epochs=3, initial_epoch=start,
                         validation_split=0.25, verbose=0,
                         callbacks=[early2, backup2, snap, watch])
    assert list(snap.at) == [2] and list(history.epoch) == [2]
    restored, restored_iterations = snap.at[2]
    assert restored_iterations == iterations
    assert all(np.array_equal(a, b) for a, b in zip(restored, weights, strict=True))
    assert seen == {k: manifest["early_stopping"][k] for k in ("best", "best_epoch", "wait")}
    rows = read_history_csv(tmp_path / "history.csv")
    assert len(rows["loss"]) == 3


def test_backup_exact_optimizer_state(tmp_path):
    x, y = _data()
    first = _model()
    backup = RunBackup(tmp_path / "b", tmp_path / "h.csv", 1)
    first.fit(x, y, batch_size=16, epochs=1, initial_epoch=backup.restore(first), verbose=0,
              callbacks=[backup])
    expected = [v.numpy() for v in first.optimizer.variables]
    second = _model(seed=3)

    class Check(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.state = [v.numpy() for v in self.model.optimizer.variables]

    check = Check()
    backup = RunBackup(tmp_path / "b", tmp_path / "h.csv", 1)
    second.fit(x, y, batch_size=16, epochs=1, initial_epoch=backup.restore(second), verbose=0,
               callbacks=[backup, check])
    assert len(check.state) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(check.state, expected, strict=True))


def test_corrupt_or_partial_backup_is_never_trusted(tmp_path):
    x, y = _data()
    model = _model()
    backup = RunBackup(tmp_path / "backup", tmp_path / "history.csv", 1)
    model.fit(x, y, batch_size=16, epochs=1, initial_epoch=backup.restore(model), verbose=0,
              callbacks=[backup])
    weights = tmp_path / "backup" / "epoch-1.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # what a kill mid-write would leave
    (tmp_path / "backup" / ".tmp-1-abcd-epoch-2.weights.h5").write_bytes(b"\0" * 100)
    fresh = _model(seed=2)
    snap = _Snapshot()
    backup = RunBackup(tmp_path / "backup", tmp_path / "history.csv", 2)
    with pytest.warns(UserWarning, match="ignoring the unusable backup"):
        start = backup.restore(fresh)
    assert start == 0
    fresh.fit(x, y, batch_size=16, epochs=2, initial_epoch=start, verbose=0,
              callbacks=[backup, snap])
    assert list(snap.at) == [0, 1] and snap.at[0][1] == 0  # started from scratch
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-2.weights.h5", MANIFEST]
    assert len(read_history_csv(tmp_path / "history.csv")["loss"]) == 2


def test_fit_without_restore_is_refused(tmp_path):
    x, y = _data()
    model = _model()
    with pytest.raises(RuntimeError, match=r"restore\(model\) must run before fit"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[RunBackup(tmp_path / "backup", tmp_path / "history.csv", 1)])


def test_non_finite_loss_raises(tmp_path):
    x, y = _data()
    x[5, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* epoch 1, batch 2:"):
        _model().fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
                     callbacks=[NonFiniteLoss()])


def test_epoch_scalars_are_tensorboard_events(tmp_path):
    x, y = _data()
    _model().fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
                 callbacks=[EpochScalars(tmp_path)])
    seen = {}
    for split in ("train", "validation"):
        for file in (tmp_path / split).iterdir():
            for event in tf.compat.v1.train.summary_iterator(str(file)):
                for value in event.summary.value:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    seen.setdefault((split, value.tag), []).append(event.step)
    assert seen[("train", "epoch_loss")] == [0, 1] == seen[("validation", "epoch_loss")]


def test_rebuilt_scalars_hold_each_kept_epoch_once(tmp_path):
    """A resumed run's TensorBoard files equal its kept history: the epochs a killed run logged
    and its resume redoes are not shown twice."""
    killed = EpochScalars(tmp_path)
    for epoch in range(3):  # the killed run logged epochs 0-2; its backup kept 0-1
        killed.on_epoch_end(epoch, {"loss": 10.0 + epoch, "val_loss": 20.0 + epoch})
    killed.on_train_end()
    rows = [{"epoch": 0, "loss": 10.0, "val_loss": 20.0},
            {"epoch": 1, "loss": 11.0, "val_loss": 21.0}]
    resumed = EpochScalars(tmp_path)
    resumed.rebuild(rows)
    resumed.on_epoch_end(2, {"loss": 7.0, "val_loss": 8.0})  # epoch 2, redone
    resumed.on_train_end()
    seen = tensorboard_scalars(tmp_path)
    assert seen[("train", "epoch_loss")] == [(0, 10.0), (1, 11.0), (2, 7.0)]
    assert seen[("validation", "epoch_loss")] == [(0, 20.0), (1, 21.0), (2, 8.0)]
    EpochScalars(tmp_path).rebuild([])  # a fresh start: no point left
    assert tensorboard_scalars(tmp_path) == {}


@pytest.mark.parametrize("overrides, replicas, at_0, at_end", [
    (["learning_rate=0.01"], 1, 0.01, 0.01),
    (["learning_rate=0.01", "lr_scale_with_replicas=true"], 4, 0.04, 0.04),
    (["learning_rate=0.01", "lr_schedule=cosine", "epochs=3"], 1, 0.01, 0.0),
])
def test_learning_rate_from_config(overrides, replicas, at_0, at_end):
    cfg = resolve_config(None, overrides)
    schedule = _optimizer(cfg, replicas, steps_per_epoch=5)._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        assert schedule.decay_steps == 15  # epochs x steps per epoch
        values = [float(schedule(0)), float(schedule(15))]
    else:
        values = [float(schedule)] * 2
    assert values == pytest.approx([at_0, at_end], abs=1e-7)
