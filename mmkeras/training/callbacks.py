"""Training callbacks: a crash-safe backup, the run's history, a non-finite loss guard, speed.

:class:`RunBackup` replaces ``keras.callbacks.BackupAndRestore`` (whose
``backup/latest.weights.h5`` is written in place: a kill while it is written leaves a file
every later run fails to read). After each epoch it writes the weights and optimizer state to
``backup/epoch-<N>.weights.h5`` under a temporary name, renames it, and only then writes
``backup/manifest.json`` (epoch, optimizer iterations, SHA-256 of the weights file, history,
early-stopping state), also atomically. A backup whose manifest or checksum does not match is
ignored, never loaded. It also writes ``history.csv`` from the history it keeps, so a resumed
run drops the rows after the restored epoch and appends nothing twice.

:class:`EpochScalars` writes TensorBoard logs with TensorFlow alone (``keras.callbacks.TensorBoard``
needs the ``tensorboard`` package, which TensorFlow 2.21 no longer installs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from mmkeras.data.download import sha256_file as sha256
from mmkeras.training.runfiles import atomic_path, remove_temps, write_json, write_text

MANIFEST = "manifest.json"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run is marked failed."""


def history_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of per-epoch rows: ``epoch`` then the sorted metric names."""
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row in rows:
        writer.writerow([row["epoch"], *(row.get(k, "") for k in keys)])
    return out.getvalue()


def read_history_csv(path: str | Path) -> dict[str, list[float]]:
    """``history.csv`` as ``{metric: [value per epoch]}`` (Keras ``History.history`` layout)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in rows if r[k] != ""] for k in keys}


class NonFiniteLoss(keras.callbacks.Callback):
    """Raise :class:`NonFiniteLossError` as soon as a batch or epoch reports a non-finite loss.

    ``keras.callbacks.TerminateOnNaN`` stops silently; this one raises, so the caller can mark
    the run failed and export nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def _check(self, logs: dict | None, where: str) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(f"non-finite training loss ({float(loss)}) at epoch "
                                     f"{self.epoch + 1}{where}: lower learning_rate or check the "
                                     "data; the run is marked failed and nothing is exported")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check(logs, f", batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._check(logs, "")


class EpochStats(keras.callbacks.Callback):
    """Add ``examples_per_second`` and the current ``learning_rate`` to each epoch's logs.

    Place it before ``TensorBoard`` and :class:`RunBackup` so both record them.
    """

    def __init__(self, examples_per_epoch: int) -> None:
        super().__init__()
        self.examples = examples_per_epoch
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["examples_per_second"] = self.examples / max(time.perf_counter() - self.start, 1e-9)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))


class EpochScalars(keras.callbacks.Callback):
    """Per-epoch TensorBoard scalars: ``<log_dir>/train`` and ``<log_dir>/validation``.

    Tags are ``epoch_<name>`` as Keras's TensorBoard callback writes them (``val_`` logs go to
    ``validation``); ``tensorboard --logdir <log_dir>`` shows them. :meth:`rebuild` makes the
    files hold exactly the epochs a resumed run keeps, so an epoch redone after a crash is one
    point, not two.
    """

    METADATA = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self.writers: dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
        return self.writers[name]

    def rebuild(self, rows: list[dict[str, Any]]) -> None:
        """Replace the event files with ``rows`` (the kept history, ``epoch`` in each row).

        Call it before ``fit``: a run killed mid-epoch may have logged epochs that its resume
        redoes. The files are derived from ``history.csv``'s rows, so a kill during the
        rebuild is mended by the next one.
        """
        for split in ("train", "validation"):
            for path in (self.log_dir / split).glob("events.out.tfevents.*"):
                path.unlink()
        for row in rows:
            self.on_epoch_end(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
        for writer in self.writers.values():
            writer.flush()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=epoch,
                                 metadata=self.METADATA)

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self.writers.values():
            writer.close()


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """The optimizer's moving average of the weights (``use_ema``) wherever weights are read.

    ``keras.callbacks.SwapEMAWeights(swap_on_epoch=True)``: the averaged weights are in the
    model while validating and at every epoch's end, so ``EarlyStopping`` keeps them,
    :class:`RunBackup` saves them (with the raw weights in the optimizer's average slots) and
    the final model has them. :meth:`resume_at` puts a restored backup back the right way
    round. Place it before ``EarlyStopping`` and :class:`RunBackup`.
    """

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=True)
        self.start = 0

    def resume_at(self, epoch: int) -> None:
        """The model holds a backup's weights (averaged ones) when ``epoch > 0``."""
        self.start = epoch
        self._ema_weights_in_model = epoch > 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.start >= self.params["epochs"] > 0:  # nothing left to train: keep the average
            self._finalize_ema_values()  # as the value fit's final step copies into the model
            self._ema_weights_in_model = False


_NOT_YET = object()  # RunBackup.restore has not run for the coming fit


def seed_states(model: keras.Model) -> list:
    """The states of the model's random seed generators (dropout, modality dropout...).

    ``save_weights`` leaves them out; a backup keeps them so that a resumed run draws the
    same dropout masks as one that was never stopped.
    """
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class RunBackup(keras.callbacks.Callback):
    """Crash-safe epoch backups in ``backup_dir`` and ``history.csv``, and resuming from them.

    :meth:`restore`, called before ``fit``, loads a valid backup's weights, optimizer state
    (its ``iterations`` included) and history and returns the epoch to pass as
    ``fit(initial_epoch=...)``; ``on_train_begin`` then restores ``early_stopping``'s state. A
    run that early stopping had ended trains no more epochs. ``writer=False`` (a non-chief
    worker) restores but writes nothing; ``verbose`` prints what was restored. Put it after
    ``EarlyStopping`` in the callback list.
    """

    def __init__(self, backup_dir: str | Path, history_path: str | Path, epochs: int,
                 early_stopping: keras.callbacks.EarlyStopping | None = None,
                 writer: bool = True, verbose: int = 0) -> None:
        super().__init__()
        self.dir = Path(backup_dir)
        self.history_path = Path(history_path)
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.writer = writer
        self.verbose = verbose
        self.rows: list[dict[str, Any]] = []
        self.restored_epoch: int | None = None  # epochs finished before this fit started
        self._restored: Any = _NOT_YET  # the manifest restore() found, until on_train_begin

    # -- reading ----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The last complete backup's manifest, or ``None`` (no backup, or an unusable one)."""
        path = self.dir / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
            for key in ("latest", "best"):
                entry = manifest.get(key)
                if entry and sha256(self.dir / entry["file"]) != entry["sha256"]:
                    raise ValueError(f"{entry['file']} does not match its checksum")
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"ignoring the unusable backup in {self.dir} ({err}); training starts "
                          "from the beginning", stacklevel=2)
            return None
        return manifest

    def _weights(self, file: str) -> list[np.ndarray]:
        self.model.load_weights(self.dir / file)
        return self.model.get_weights()

    def restore(self, model: keras.Model) -> int:
        """Load the last valid backup into the compiled ``model``; return the epoch to start at.

        Restores weights, optimizer state and history now; ``early_stopping``'s state is put
        back in ``on_train_begin`` (after ``EarlyStopping`` resets itself there). Call it
        before ``fit`` and pass the result as ``fit(initial_epoch=...)``; 0 without a backup,
        ``epochs`` when early stopping had ended the run.
        """
        self.set_model(model)
        manifest = self._restored = self.manifest()
        if manifest is None:
            self.rows = []
            if self.writer:
                self.history_path.unlink(missing_ok=True)
            return 0
        optimizer = model.optimizer
        if not optimizer.built:  # Keras builds it lazily, at the first step
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        model.load_weights(self.dir / manifest["latest"]["file"])
        states = seed_states(model)
        if len(states) == len(manifest.get("seeds", [])):
            for variable, value in zip(states, manifest["seeds"], strict=True):
                variable.assign(np.asarray(value, variable.dtype))
        self.rows = manifest["history"]
        epoch = self.restored_epoch = int(manifest["epoch"])
        if self.verbose:
            step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            print(f"resumed from {self.dir}: {epoch} epochs finished, optimizer step {step}")
        if self.writer:
            write_text(self.history_path, history_csv(self.rows))
        return self.epochs if manifest.get("stopped") else epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._restored is _NOT_YET:
            raise RuntimeError("RunBackup.restore(model) must run before fit, whose "
                               "initial_epoch is the epoch it returns")
        manifest, self._restored = self._restored, _NOT_YET
        es = self.early_stopping
        if es is None or manifest is None:
            return
        if manifest.get("best"):
            weights = self.model.get_weights()
            es.best_weights = self._weights(manifest["best"]["file"])
            self.model.set_weights(weights)
        for key, value in (manifest.get("early_stopping") or {}).items():
            setattr(es, key, value)

    # -- writing ----------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        file = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(self.dir / file) as tmp:
            self.model.save_weights(tmp)
        latest = {"file": file, "sha256": sha256(self.dir / file)}
        manifest: dict[str, Any] = {
            "epoch": epoch + 1,
            "iterations": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            "latest": latest,
            "history": self.rows,
            "stopped": bool(self.model.stop_training),
            "seeds": [keras.ops.convert_to_numpy(v).tolist() for v in seed_states(self.model)],
        }
        es = self.early_stopping
        if es is not None:
            manifest["early_stopping"] = {
                "wait": es.wait, "stopped_epoch": es.stopped_epoch, "best_epoch": es.best_epoch,
                "best": None if es.best is None else float(es.best),
            }
            if es.best_weights is not None:
                best_file = f"epoch-{es.best_epoch + 1}.weights.h5"
                manifest["best"] = latest if best_file == file else self._previous_best()
        write_json(self.dir / MANIFEST, manifest)
        keep = {MANIFEST, file, (manifest.get("best") or {}).get("file")}
        for old in self.dir.iterdir():
            if old.name not in keep:
                old.unlink(missing_ok=True)
        remove_temps(self.dir)
        write_text(self.history_path, history_csv(self.rows))

    def _previous_best(self) -> dict[str, str] | None:
        """The best epoch's entry of the current manifest (its weights file is kept)."""
        path = self.dir / MANIFEST
        return json.loads(path.read_text()).get("best") if path.is_file() else None
