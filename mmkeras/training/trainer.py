"""One training run: data, preprocessing fitted on train, model, fit, evaluation, export.

Everything a run produces goes into its run folder, each file written under a temporary name
and renamed (a killed run never leaves a half-written file):

``config.yaml`` (the resolved config), ``run_info.json`` (config, package versions, git commit,
command line of every invocation), ``state.json`` (the stage reached: ``training``, ``trained``,
``evaluated``, ``done`` or ``failed``), ``preprocessing.json`` (train-split statistics and
vocabularies), ``dataset.json`` and ``examples.npz``, ``history.csv`` and ``history.png``,
``tensorboard/`` (loss, metrics, learning rate, examples/s per epoch), ``metrics.json`` and
``confusion_matrix.png`` (test split), ``evaluation.json`` and ``eval_*.png`` (calibration,
per-modality contribution, robustness: :mod:`mmkeras.evaluation`), ``model.keras`` (the raw-input
:class:`~mmkeras.models.InferenceModel`), ``export/<model_name>/<version>/`` (TF
Serving SavedModel), ``export_validation.json`` (the SavedModel re-loaded in a separate
TensorFlow-only process) and ``quarantine.csv`` (bad records skipped while building the dataset).

Running the same command again resumes from the last complete stage: mid-training from the last
finished epoch (weights, optimizer state and epoch counter from ``backup/``, see
:class:`~mmkeras.training.callbacks.RunBackup`), after training without training again.
``batch_size`` is per replica: the global batch is ``batch_size x replicas``.

Example:
    from mmkeras.config import resolve_config
    result = train(resolve_config(None, ["epochs=1"]))
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from mmkeras.config import Config, ConfigError, _closest
from mmkeras.data.dataset import MultimodalDataset, to_tf_dataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.data.quarantine import DataError
from mmkeras.models import build_models, end_to_end
from mmkeras.models.preprocessor import add_step_masks, dataset_step_masks
from mmkeras.training.callbacks import (
    AveragedWeights,
    EpochScalars,
    EpochStats,
    NonFiniteLoss,
    NonFiniteLossError,
    RunBackup,
)
from mmkeras.training.interrupt import StopOnInterrupt, raise_if_interrupted
from mmkeras.training.metrics import classification_metrics
from mmkeras.training.plots import plot_confusion, plot_history
from mmkeras.training.runfiles import (
    FAILED,
    STAGES,
    RunFolderError,
    atomic_path,
    comparable,
    empty_folder,
    open_run_dir,
    record_run_info,
    release_run_dir,
    remove_temps,
    write_json,
    write_state,
    write_text,
)
from mmkeras.training.strategy import get_strategy

EXAMPLES = 64
# how far the exported SavedModel's probabilities may be from the Keras model's: 16-bit
# activations round differently in the two graphs
EXPORT_ATOL = {"none": 1e-5, "mixed_float16": 1e-2, "mixed_bfloat16": 3e-2}


@dataclass
class RunResult:
    """What a finished run left behind."""

    run_dir: Path
    metrics: dict
    export_dir: Path | None  # None on a non-chief worker
    seconds: float
    model: keras.Model | None  # None on a non-chief worker that had nothing left to train


def _batched_predict(model: keras.Model, dataset: MultimodalDataset, split: str,
                     batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of the raw-input model on one split, and the split's labels.

    A streaming dataset is read once, batch by batch: each batch's labels are kept with its
    predictions (same order) and its inputs are dropped.
    """
    if not dataset.streaming:
        inputs = to_tf_dataset(dataset, split, batch).map(lambda x, y: x)
        return model.predict(inputs, verbose=0)["probabilities"], dataset.splits[split]["label"]
    probabilities, labels = [], []
    for inputs, label in to_tf_dataset(dataset, split, batch):
        probabilities.append(np.asarray(model.predict_on_batch(inputs)["probabilities"]))
        labels.append(label.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def feature_dataset(preprocessor, dataset: MultimodalDataset, split: str, batch: int,
                    tasks: dict | None, shuffle: bool = False, seed: int = 0,
                    augment: dict | None = None) -> tf.data.Dataset:
    """Preprocessed ``(features, {output: target})`` batches for the task model.

    The main label feeds ``probabilities``; each extra task reads the split's array of its name.
    The preprocessing is deterministic, so it runs once and its output is cached in memory;
    shuffling happens after the cache, every epoch. ``augment`` (the config's settings) acts on
    the ``train`` split only: raw inputs are cached instead, and every epoch's batches are
    augmented, preprocessed and augmented again (:mod:`mmkeras.data.augment`).
    """
    targets = {"probabilities": "label", **{t: t for t in (tasks or {}) if t != "label"}}
    if dataset.streaming:  # from shards with a bounded shuffle buffer; nothing held in memory
        ds = to_tf_dataset(dataset, split, batch, shuffle=shuffle, seed=seed, targets=targets)
        return preprocessor.map_dataset(ds).prefetch(tf.data.AUTOTUNE)
    ds = to_tf_dataset(dataset, split, batch, targets=targets)
    ds = add_step_masks(ds, dataset, split, preprocessor.step_masks, batch)
    if augment and split == "train":
        from mmkeras.data.augment import augmented_features

        kinds = {n: s.kind for n, s in dataset.modalities.items()}
        ds = augmented_features(ds, preprocessor, augment, kinds, dataset.num_examples(split),
                                batch, shuffle=shuffle, seed=seed)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = preprocessor.map_dataset(ds).unbatch().cache()
    ds = ds.apply(tf.data.experimental.assert_cardinality(dataset.num_examples(split)))
    if shuffle:
        ds = ds.shuffle(dataset.num_examples(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def write_dataset_card(dataset: MultimodalDataset, run_dir: Path) -> None:
    """``dataset.json`` (modality specs, class names) and ``examples.npz`` (raw test examples).

    Together with ``model.keras`` they let a finished run be exported and validated again
    without the dataset: ``examples.npz`` holds the first (up to) 64 raw test inputs and their
    labels, read alone from a streaming dataset. Float modalities also record their
    per-channel training range (``range``: ``low``, ``high``; a prepared dataset brings them),
    which the serving signature widens into the accepted input range.
    """
    card = {
        "name": dataset.name,
        "class_names": list(dataset.class_names),
        "modalities": {n: {"kind": s.kind, "shape": list(s.shape), "dtype": s.dtype,
                           "options": s.options} for n, s in dataset.modalities.items()},
    }
    ranges = dataset.info.get("ranges")  # a prepared dataset brings them
    for name, spec in dataset.modalities.items():
        if ranges is not None and name in ranges:
            card["modalities"][name]["range"] = ranges[name]
        elif spec.dtype.startswith("float") and spec.kind != "audio" and not dataset.streaming:
            values = np.asarray(dataset.splits["train"][name], np.float64)
            values = values.reshape(-1, values.shape[-1] if values.ndim > 2 else 1)
            card["modalities"][name]["range"] = {"low": np.nanmin(values, axis=0).tolist(),
                                                 "high": np.nanmax(values, axis=0).tolist()}
    write_json(run_dir / "dataset.json", card)
    test = dataset.head("test", EXAMPLES) if dataset.streaming else dataset.splits["test"]
    n = min(EXAMPLES, len(test["label"]))
    arrays = {k: np.asarray(test[k][:n]) for k in dataset.modalities}
    arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
    with atomic_path(run_dir / "examples.npz") as tmp:
        np.savez(tmp, label=test["label"][:n], **arrays)


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes run files (every process is chief outside multi-worker runs)."""
    try:
        from mmkeras.training.strategy import is_chief
    except ImportError:
        return True
    return is_chief(strategy)


def _optimizer(cfg: Config, replicas: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW with ``learning_rate`` (times the replicas if ``lr_scale_with_replicas``), constant
    or cosine-decayed to 0 over ``epochs * steps_per_epoch`` steps; with ``ema_momentum`` it
    keeps a moving average of the weights (see :class:`AveragedWeights`)."""
    lr = cfg.learning_rate * (replicas if cfg.lr_scale_with_replicas else 1)
    if cfg.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.epochs * steps_per_epoch)
    return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay,
                                  use_ema=cfg.ema_momentum > 0,
                                  ema_momentum=cfg.ema_momentum or 0.99)


def _compiled(cfg: Config, dataset: MultimodalDataset, state: dict,
              strategy: tf.distribute.Strategy, plain: dict, encoders: dict) -> tuple:
    """Preprocessor, task and the compiled training model, under ``strategy``."""
    replicas = strategy.num_replicas_in_sync
    steps = math.ceil(dataset.num_examples("train") / (cfg.batch_size * replicas))
    with strategy.scope():
        preprocessor, task = build_models(
            dataset.modalities, state, len(dataset.class_names),
            encoders=encoders, fusion=plain["fusion"], embed_dim=cfg.embed_dim,
            dropout=cfg.dropout, modality_dropout=cfg.modality_dropout, tasks=plain["tasks"],
            representation_penalty=cfg.representation_penalty, seed=cfg.seed,
            step_masks=dataset_step_masks(dataset),
        )
        losses, loss_weights = task.losses_and_weights()
        trainee = task.training_model()
        trainee.compile(
            optimizer=_optimizer(cfg, replicas, steps),
            loss=losses,
            loss_weights=loss_weights,
            metrics={"probabilities": [keras.metrics.SparseCategoricalAccuracy("accuracy")]},
        )
    return preprocessor, task, trainee


def _fit(cfg: Config, dataset: MultimodalDataset, strategy: tf.distribute.Strategy,
         run_dir: Path, chief: bool) -> tuple[keras.Model, dict[str, list[float]]]:
    """The ``training`` stage: preprocessing, models, fit (resumed from ``backup/``)."""
    state = dataset.info.get("preprocessing") or fit_preprocessing(dataset, "train")
    if chief:
        write_json(run_dir / "preprocessing.json", state)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    n_train = dataset.num_examples("train")
    plain = cfg.to_dict()  # encoders, fusion and tasks as plain mappings
    encoders = plain["encoders"]
    if cfg.modalities is not None:  # a config's encoders for the modalities left out go too
        encoders = {m: e for m, e in encoders.items() if m in dataset.modalities}
    try:
        preprocessor, task, trainee = _compiled(cfg, dataset, state, strategy, plain, encoders)
        train_ds = feature_dataset(preprocessor, dataset, "train", global_batch, plain["tasks"],
                                   shuffle=True, seed=cfg.seed, augment=cfg.augment)
        val_ds = feature_dataset(preprocessor, dataset, "val", global_batch, plain["tasks"],
                                 augment=cfg.augment)
    except ValueError as err:  # the builders' checks: encoders, fusion arguments, tasks
        raise ConfigError(f"this config cannot build its model: {err}") from None
    early = None
    if cfg.early_stopping:
        early = keras.callbacks.EarlyStopping("val_loss", patience=cfg.early_stopping,
                                              restore_best_weights=True, verbose=cfg.verbose)
    backup = RunBackup(run_dir / "backup", run_dir / "history.csv", cfg.epochs, early, chief,
                       verbose=cfg.verbose)
    averaged = AveragedWeights() if cfg.ema_momentum else None
    callbacks: list[keras.callbacks.Callback] = [NonFiniteLoss(), EpochStats(n_train)]
    start = backup.restore(trainee)
    if chief:
        scalars = EpochScalars(run_dir / "tensorboard")
        scalars.rebuild(backup.rows)
        callbacks.append(scalars)
    callbacks += [c for c in (averaged, early, backup) if c is not None] + [StopOnInterrupt()]
    for _ in range(_iterators_before(start, cfg, train_ds)):
        iter(train_ds)  # draws the next epoch's shuffle order and augmentation seeds
    if averaged is not None:
        averaged.resume_at(start)
    if cfg.strategy == "multi_worker":  # Keras 3.15 fit fails there (keras-team/keras#20585)
        from mmkeras.training.loop import fit_custom

        fit_custom(trainee, train_ds, validation_data=val_ds, epochs=cfg.epochs,
                   initial_epoch=start, verbose=cfg.verbose, callbacks=callbacks,
                   strategy=strategy)
    else:
        trainee.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=start,
                    verbose=cfg.verbose, shuffle=False,  # the tf.data pipeline shuffles
                    callbacks=callbacks)
    history = {k: [row[k] for row in backup.rows if k in row]
               for k in backup.rows[-1] if k != "epoch"} if backup.rows else {}
    return end_to_end(preprocessor, task, name=cfg.model_name), history


def _iterators_before(epoch: int, cfg: Config, train_ds: tf.data.Dataset) -> int:
    """How many iterators over ``train_ds`` an uninterrupted fit had made before ``epoch``.

    Each new iterator of the training pipeline draws the next shuffle order (and augmentation
    seeds), so a resumed run makes as many first to train its epochs on the same batches.
    ``fit_custom`` makes one per epoch; Keras 3's ``model.fit`` two per epoch when the number
    of batches is known (one when the epoch starts, one when it ends) and only one for the
    first epoch when it is not (a streaming dataset: counted at the end of that epoch).
    ``tests/test_faults.py`` checks the in-memory ``model.fit`` case end to end.
    """
    epoch = min(epoch, cfg.epochs)
    if epoch <= 0 or cfg.strategy == "multi_worker":
        return max(epoch, 0)
    known = int(train_ds.cardinality()) >= 0
    return 2 * epoch if known else 2 * epoch - 1


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` when it is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _exported(run_dir: Path, cfg: Config) -> Path | None:
    """The export folder of this run's version if an earlier attempt placed and validated it."""
    final = run_dir / "export" / cfg.model_name / str(cfg.model_version)
    report = run_dir / "export_validation.json"
    if not (final / "saved_model.pb").is_file() or not report.is_file():
        return None
    try:
        ok = json.loads(report.read_text()).get("ok")
    except ValueError:
        return None
    return final if ok else None


def _load_and_select(cfg: Config, dataset: MultimodalDataset | None) -> MultimodalDataset:
    """``cfg``'s dataset and modalities; a value the dataset refuses is a :class:`ConfigError`.

    The schema checks ``dataset_args`` names and types; ranges and modality names are the
    dataset's to check, so its plain ``ValueError`` (a data problem is a ``DataError``) and an
    unknown modality are reported as configuration errors naming the field.
    """
    if dataset is None:
        from data_pipelines import load_dataset

        try:
            dataset = load_dataset(cfg.dataset, strict=cfg.strict, **cfg.dataset_args)
        except DataError:
            raise
        except ValueError as err:
            raise ConfigError(f"config field 'dataset_args'={cfg.dataset_args!r}: "
                              f"{cfg.dataset}'s load() refused it: {err}") from None
    unknown = [m for m in cfg.modalities or [] if m not in dataset.modalities]
    if unknown:
        close = _closest(unknown[0], dataset.modalities)
        raise ConfigError(f"config field 'modalities'={cfg.modalities!r}: dataset "
                          f"{dataset.name!r} has no modality {unknown[0]!r}{close} "
                          f"Available: {', '.join(dataset.modalities)}")
    return dataset.select(cfg.modalities)


def _discard_fresh_run(run_dir: Path, output: str | None) -> None:
    """Remove what a fresh run wrote before failing on its config (an --output folder that
    existed stays, emptied), so the corrected command can use the same folder."""
    if output is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        empty_folder(run_dir)


def train(cfg: Config, dataset: MultimodalDataset | None = None,
          overwrite: bool = False) -> RunResult:
    """Run the whole job described by ``cfg``; ``dataset`` overrides ``cfg.dataset`` if given.

    Resumes a run folder (``cfg.output``) from its last complete stage; ``overwrite`` clears a
    previous run there first. Raises :class:`~mmkeras.training.runfiles.RunFolderError` when the
    folder cannot be used and :class:`~mmkeras.training.callbacks.NonFiniteLossError` (run
    marked failed, nothing exported) when the loss stops being finite.
    """
    start = time.perf_counter()
    strategy = get_strategy(cfg.strategy)  # first: multi-worker needs it before other TF ops
    chief = _is_chief(strategy)
    config = comparable(cfg.to_dict())
    run_dir, state = open_run_dir(cfg.output, cfg.runs_dir, cfg.name, cfg.to_dict(),
                                  overwrite=overwrite, writer=chief)
    try:  # open_run_dir locked the folder: no other run writes it until this one ends
        return _train_in(cfg, dataset, strategy, chief, config, run_dir, state, start)
    finally:
        release_run_dir(run_dir)


def _train_in(cfg: Config, dataset: MultimodalDataset | None, strategy: tf.distribute.Strategy,
              chief: bool, config: dict, run_dir: Path, state: dict | None,
              start: float) -> RunResult:
    """:func:`train` in the run folder it opened (and locked)."""
    stage = STAGES.index(state["stage"]) if state else 0
    if not chief and stage > 0:  # training is over: the chief evaluates and exports
        return RunResult(run_dir, {}, None, time.perf_counter() - start, None)
    replicas = strategy.num_replicas_in_sync
    if chief:
        remove_temps(run_dir)
        if state is None:  # first, so that a run killed from here on is resumed, not refused
            write_state(run_dir, "training", config=config)
        write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        record_run_info(run_dir, cfg.to_dict(), resumed_from=STAGES[stage] if state else None,
                        replicas=replicas, global_batch_size=cfg.batch_size * replicas)
    saved = _read_json(run_dir / "metrics.json") if stage == STAGES.index("evaluated") else None
    if stage == STAGES.index("evaluated") and saved is None:
        print(f"{run_dir / 'metrics.json'} is missing or damaged: evaluating again",
              file=sys.stderr)
        stage = STAGES.index("trained")
    keras.utils.set_random_seed(cfg.seed)
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(
        "float32" if cfg.mixed_precision == "none" else cfg.mixed_precision)
    try:
        if stage <= STAGES.index("trained"):
            try:
                dataset = _load_and_select(cfg, dataset)
            except ConfigError:
                if state is None and chief:  # nothing ran: leave no folder to --overwrite
                    _discard_fresh_run(run_dir, cfg.output)
                raise
        if stage == 0:
            quarantine = dataset.info.get("quarantine")
            if quarantine is not None:
                print(quarantine.summary())
                if chief:
                    with atomic_path(run_dir / "quarantine.csv") as tmp:
                        quarantine.write(tmp)
            if chief:
                write_dataset_card(dataset, run_dir)
            try:
                model, history = _fit(cfg, dataset, strategy, run_dir, chief)
            except NonFiniteLossError as err:
                if chief:
                    write_state(run_dir, FAILED, error=str(err))
                raise
            except ConfigError:  # the model could not be built: no epoch ran
                if state is None and chief:
                    _discard_fresh_run(run_dir, cfg.output)
                raise
            if not chief:  # workers train; the chief evaluates and exports
                return RunResult(run_dir, {}, None, time.perf_counter() - start, model)
            with atomic_path(run_dir / "model.keras") as tmp:
                model.save(tmp)
            with atomic_path(run_dir / "history.png") as tmp:
                plot_history(history, tmp)
            write_state(run_dir, "trained")
            raise_if_interrupted()  # a Ctrl-C Python swallowed: stop here, resumable
        else:
            from mmkeras.evaluation.run_folder import load_run_model

            model = load_run_model(run_dir / "model.keras", RunFolderError)  # one-line refusal
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # model.keras supersedes it
        if stage <= STAGES.index("trained"):
            metrics = _evaluate(cfg, dataset, model, replicas, run_dir)
            write_state(run_dir, "evaluated")
            raise_if_interrupted()
        else:
            metrics = saved
        export_dir = _exported(run_dir, cfg)
        if export_dir is None:
            from mmkeras.serving.export import export_run

            export_dir = export_run(run_dir, version=cfg.model_version, model=model,
                                    atol=EXPORT_ATOL[cfg.mixed_precision],
                                    log=print if cfg.verbose else lambda *_: None)
            raise_if_interrupted()  # placed and validated: the same command then ends "done"
        write_state(run_dir, "done")
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    return RunResult(run_dir, metrics, export_dir, time.perf_counter() - start, model)


def _evaluate(cfg: Config, dataset: MultimodalDataset, model: keras.Model, replicas: int,
              run_dir: Path) -> dict:
    """The ``evaluated`` stage: ``metrics.json`` and ``confusion_matrix.png`` on the whole test
    split (streamed from a streaming dataset), and the full report of
    :func:`mmkeras.evaluation.evaluate_run` (``evaluation.json``, calibration, per-modality
    contribution, robustness; on a bounded sample of a streaming dataset)."""
    from mmkeras.evaluation import evaluate_run

    probabilities, y_true = _batched_predict(model, dataset, "test", cfg.batch_size)
    metrics = classification_metrics(y_true, probabilities.argmax(-1), dataset.class_names)
    metrics.update(fusion=cfg.fusion, modalities=list(dataset.modalities),
                   train_examples=dataset.num_examples("train"), replicas=replicas,
                   global_batch_size=cfg.batch_size * replicas)
    with atomic_path(run_dir / "confusion_matrix.png") as tmp:
        plot_confusion(metrics["confusion_matrix"], dataset.class_names, tmp)
    write_json(run_dir / "metrics.json", metrics)
    evaluate_run(run_dir, model=model, dataset=dataset, seed=cfg.seed)
    return metrics
