"""avdigits (issue 7): each modality alone, the fusion, and the fusion with a modality absent.

Every variant trains with the shipped ``data_pipelines/configs/avdigits.yaml`` (plus the
variant's overrides) through the trainer's own pieces (``fit_preprocessing``, ``build_models``,
the optimizer, ``feature_dataset`` with the config's augmentation, early stopping as
configured), without the run folder, evaluation report and export that ``mmkeras.train`` adds.
Test metrics are on the unseen speaker (yweweler), validation accuracy on the validation
speaker (theo; the one to choose settings on). The fused model is trained with the config's
modality dropout; ``fusion, audio absent`` / ``fusion, image absent`` are that same model with
``<modality>_present = 0`` for every validation and test example.

Run from the repository root (about 2-3 minutes per run on 2 busy CPU cores)::

    MMKERAS_DATA_DIR=../shared/data TF_CPP_MIN_LOG_LEVEL=3 \\
        python benchmarks/bench_avdigits.py --seeds 0 1 2 [--variants audio image fusion] \\
        [--override key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from data_pipelines import load_dataset
from mmkeras.config import resolve_config
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.evaluation.predict import predict
from mmkeras.models import build_models, end_to_end
from mmkeras.training.metrics import classification_metrics
from mmkeras.training.trainer import _optimizer, feature_dataset

CONFIG = Path(__file__).parents[1] / "data_pipelines" / "configs" / "avdigits.yaml"
VARIANTS = {
    "audio": ["modalities=[audio]"],
    "image": ["modalities=[image]"],
    "fusion": [],
    "audio, no augmentation": ["modalities=[audio]", "augment={}"],
}


def run(overrides: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Train one variant; its test accuracy and macro-F1 (and with each modality absent)."""
    cfg = resolve_config(CONFIG, [*overrides, f"seed={seed}"])
    keras.utils.set_random_seed(cfg.seed)
    start = time.perf_counter()
    data = load_dataset(cfg.dataset, **cfg.dataset_args).select(cfg.modalities)
    plain = cfg.to_dict()
    # drop the encoder spec of a modality this variant leaves out (audio's, for image alone)
    encoders = {m: spec for m, spec in plain["encoders"].items() if m in data.modalities}
    pre, task = build_models(
        data.modalities, fit_preprocessing(data, "train"), len(data.class_names),
        encoders=encoders, fusion=plain["fusion"], embed_dim=cfg.embed_dim,
        dropout=cfg.dropout, modality_dropout=cfg.modality_dropout, tasks=plain["tasks"],
        representation_penalty=cfg.representation_penalty, seed=cfg.seed)
    losses, loss_weights = task.losses_and_weights()
    trainee = task.training_model()
    steps = -(-data.num_examples("train") // cfg.batch_size)
    accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    trainee.compile(optimizer=_optimizer(cfg, 1, steps), loss=losses, loss_weights=loss_weights,
                    metrics={"probabilities": [accuracy]})
    train = feature_dataset(pre, data, "train", cfg.batch_size, None, shuffle=True,
                            seed=cfg.seed, augment=cfg.augment)
    val = feature_dataset(pre, data, "val", cfg.batch_size, None)
    callbacks = [keras.callbacks.EarlyStopping("val_loss", patience=cfg.early_stopping,
                                               restore_best_weights=True)] \
        if cfg.early_stopping else []
    trainee.fit(train, validation_data=val, epochs=cfg.epochs, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    model = end_to_end(pre, task)
    cases = {"": ()} | ({f", {m} absent": (m,) for m in data.modalities}
                        if len(data.modalities) > 1 else {})
    out = {}
    for suffix, absent in cases.items():
        scores = {}
        for split in ("val", "test"):
            arrays = data.splits[split]
            predicted = predict(model, {m: arrays[m] for m in data.modalities},
                                absent=absent)["probabilities"].argmax(-1)
            scores[split] = classification_metrics(arrays["label"], predicted,
                                                   data.class_names)
        out[suffix] = {"accuracy": scores["test"]["accuracy"],
                       "macro_f1": scores["test"]["macro_f1"],
                       "val_accuracy": scores["val"]["accuracy"], "seconds": seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["audio", "image", "fusion"],
                        choices=list(VARIANTS))
    parser.add_argument("--override", nargs="*", default=[], help="key=value for every run")
    parser.add_argument("--json", type=Path, help="also write the per-seed numbers here")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            for suffix, numbers in run([*VARIANTS[variant], *args.override], seed).items():
                rows.setdefault(variant + suffix, []).append({"seed": seed, **numbers})
                print(json.dumps({"variant": variant + suffix, "seed": seed, **numbers}),
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))

    def stat(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{np.mean(values):.4f} ± {std:.4f}"

    print("\n| variant | test accuracy | test macro-F1 | val accuracy | s per run |")
    print("|---|---|---|---|---|")
    for name, seeds in rows.items():
        print(f"| {name} | {stat([r['accuracy'] for r in seeds])} | "
              f"{stat([r['macro_f1'] for r in seeds])} | "
              f"{stat([r['val_accuracy'] for r in seeds])} | "
              f"{np.mean([r['seconds'] for r in seeds]):.0f} |")


if __name__ == "__main__":
    main()
