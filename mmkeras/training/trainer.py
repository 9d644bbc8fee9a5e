"""One training run: data, preprocessing fitted on train, model, fit, evaluation, export.

Everything a run produces goes into its run folder:

``config.yaml`` (the resolved config), ``preprocessing.json`` (train-split statistics and
vocabularies), ``history.csv`` and ``history.png``, ``metrics.json`` and ``confusion_matrix.png``
(test split), ``model.keras``, ``export/<model_name>/<version>/`` (TF Serving SavedModel) and
``export_validation.json`` (the SavedModel re-loaded in a separate TensorFlow-only process) and
``quarantine.csv`` (bad records skipped while building the dataset, one row each with the reason).

A crashed run resumes where it stopped when started again with the same ``--output``:
``keras.callbacks.BackupAndRestore`` keeps the last finished epoch in ``backup/``.

Example:
    from mmkeras.config import resolve_config
    result = train(resolve_config(None, ["epochs=1"]))
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from mmkeras.config import Config
from mmkeras.data.dataset import MultimodalDataset, to_tf_dataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.models import build_models, end_to_end
from mmkeras.training.metrics import classification_metrics
from mmkeras.training.plots import plot_confusion, plot_history
from mmkeras.training.strategy import get_strategy

EXAMPLES = 64


@dataclass
class RunResult:
    """What a finished run left behind."""

    run_dir: Path
    metrics: dict
    export_dir: Path
    seconds: float
    model: keras.Model


def make_run_dir(cfg: Config) -> Path:
    """``cfg.output`` if given, else ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>``."""
    if cfg.output:
        return Path(cfg.output)
    return Path(cfg.runs_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _batched_predict(model: keras.Model, dataset: MultimodalDataset, split: str, batch: int):
    """Class probabilities of the raw-input model on one split."""
    inputs = to_tf_dataset(dataset, split, batch).map(lambda x, y: x)
    return model.predict(inputs, verbose=0)["probabilities"]


def feature_dataset(preprocessor, dataset: MultimodalDataset, split: str, batch: int,
                    tasks: dict | None, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Preprocessed ``(features, {output: target})`` batches for the task model.

    The main label feeds ``probabilities``; each extra task reads the split's array of its name.
    The preprocessing is deterministic, so it runs once and its output is cached in memory;
    shuffling happens after the cache, every epoch.
    """
    targets = {"probabilities": "label", **{t: t for t in (tasks or {}) if t != "label"}}
    ds = to_tf_dataset(dataset, split, batch, targets=targets)
    ds = preprocessor.map_dataset(ds).unbatch().cache()
    if shuffle:
        ds = ds.shuffle(dataset.num_examples(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def write_dataset_card(dataset: MultimodalDataset, run_dir: Path) -> None:
    """``dataset.json`` (modality specs, class names) and ``examples.npz`` (raw test examples).

    Together with ``model.keras`` they let a finished run be exported and validated again
    without the dataset: ``examples.npz`` holds up to 64 raw test inputs and their labels.
    """
    card = {
        "name": dataset.name,
        "class_names": list(dataset.class_names),
        "modalities": {n: {"kind": s.kind, "shape": list(s.shape), "dtype": s.dtype,
                           "options": s.options} for n, s in dataset.modalities.items()},
    }
    (run_dir / "dataset.json").write_text(json.dumps(card, indent=2))
    test = dataset.splits["test"]
    n = min(EXAMPLES, len(test["label"]))
    arrays = {k: np.asarray(test[k][:n]) for k in dataset.modalities}
    arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
    np.savez(run_dir / "examples.npz", label=test["label"][:n], **arrays)


def train(cfg: Config, dataset: MultimodalDataset | None = None) -> RunResult:
    """Run the whole job described by ``cfg``; ``dataset`` overrides ``cfg.dataset`` if given."""
    from data_pipelines import load_dataset

    start = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    run_dir = make_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    if dataset is None:
        dataset = load_dataset(cfg.dataset, strict=cfg.strict, **cfg.dataset_args)
    quarantine = dataset.info.get("quarantine")
    if quarantine is not None:
        print(quarantine.summary())
        quarantine.write(run_dir / "quarantine.csv")
    dataset = dataset.select(cfg.modalities)
    write_dataset_card(dataset, run_dir)
    state = fit_preprocessing(dataset, "train")
    (run_dir / "preprocessing.json").write_text(json.dumps(state))

    strategy = get_strategy(cfg.strategy)
    plain = cfg.to_dict()  # encoders, fusion and tasks as plain mappings
    with strategy.scope():
        preprocessor, task = build_models(
            dataset.modalities, state, len(dataset.class_names),
            encoders=plain["encoders"], fusion=plain["fusion"], embed_dim=cfg.embed_dim,
            dropout=cfg.dropout, modality_dropout=cfg.modality_dropout, tasks=plain["tasks"],
            representation_penalty=cfg.representation_penalty, seed=cfg.seed,
        )
        losses, loss_weights = task.losses_and_weights()
        trainee = task.training_model()
        trainee.compile(
            optimizer=keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay),
            loss=losses,
            loss_weights=loss_weights,
            metrics={"probabilities": [keras.metrics.SparseCategoricalAccuracy("accuracy")]},
        )
    callbacks = [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
    ]
    if cfg.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss", patience=cfg.early_stopping, restore_best_weights=True, verbose=1
        ))
    train_ds = feature_dataset(preprocessor, dataset, "train", cfg.batch_size, plain["tasks"],
                               shuffle=True, seed=cfg.seed)
    val_ds = feature_dataset(preprocessor, dataset, "val", cfg.batch_size, plain["tasks"])
    if cfg.strategy == "multi_worker":  # Keras 3.15 fit fails there (keras-team/keras#20585)
        from mmkeras.training.loop import fit_custom

        history = fit_custom(trainee, train_ds, validation_data=val_ds, epochs=cfg.epochs,
                             verbose=cfg.verbose, callbacks=callbacks, strategy=strategy)
    else:
        history = trainee.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.epochs,
            verbose=cfg.verbose,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=callbacks,
        )
    model = end_to_end(preprocessor, task, name=cfg.model_name)
    plot_history(history.history, run_dir / "history.png")

    probabilities = _batched_predict(model, dataset, "test", cfg.batch_size)
    y_true = dataset.splits["test"]["label"]
    metrics = classification_metrics(y_true, probabilities.argmax(-1), dataset.class_names)
    metrics.update(fusion=cfg.fusion, modalities=list(dataset.modalities),
                   train_examples=dataset.num_examples("train"),
                   replicas=strategy.num_replicas_in_sync)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion(metrics["confusion_matrix"], dataset.class_names,
                   run_dir / "confusion_matrix.png")
    model.save(run_dir / "model.keras")

    from mmkeras.serving.export import export_run

    export_dir = export_run(run_dir, version=cfg.model_version, model=model,
                            log=print if cfg.verbose else lambda *_: None)
    return RunResult(run_dir, metrics, export_dir, time.perf_counter() - start, model)
