"""Evaluate a finished run folder and write ``evaluation.json`` and its figures into it.

Files written (split ``test``; another split adds ``_<split>`` to ``evaluation`` and
``eval_<split>_`` to the figures): ``evaluation.json``, ``eval_confusion_matrix.png``,
``eval_reliability.png``, ``eval_modality_weights.png`` (fusions that return
``modality_weights``) and ``eval_robustness_<modality>.png``. Each file is written under a
temporary name in the run folder, then renamed over the final one
(:func:`mmkeras.training.runfiles.atomic_path`), so a reader never sees a half-written file.
A streaming (prepared) dataset is evaluated on a seeded reservoir sample read in one streamed
pass, never the whole split in memory; ``evaluation.json``'s ``subset`` says which examples.

Example:
    from mmkeras.evaluation import evaluate_run
    report = evaluate_run("runs/machine-20261123-101500", levels=5, seed=0)
    report["metrics"]["accuracy"], report["robustness"]["modalities"]["audio"]["accuracy"]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mmkeras.data.dataset import MultimodalDataset
from mmkeras.evaluation.contribution import modality_contribution, weights_per_class
from mmkeras.evaluation.metrics import ECE_BINS, expected_calibration_error, roc_auc_ovr
from mmkeras.evaluation.plots import plot_modality_weights, plot_reliability, plot_robustness
from mmkeras.evaluation.predict import predict
from mmkeras.evaluation.robustness import effective_robustness, robustness_curves
from mmkeras.evaluation.run_folder import EvaluationError, load_run_model, read_run
from mmkeras.training.metrics import classification_metrics
from mmkeras.training.plots import plot_confusion
from mmkeras.training.runfiles import atomic_path, write_json

BATCH_SIZE = 64
STREAM_EXAMPLES = 2000  # examples evaluated from a streaming dataset without max_examples


def _baseline_curves(baseline: str | Path) -> dict[str, list[float]]:
    path = Path(baseline)
    if path.is_dir():
        path = path / "evaluation.json"
    if not path.is_file():
        raise EvaluationError(f"baseline {baseline} has no evaluation.json: evaluate that run "
                              "first (python -m mmkeras.evaluate --run BASELINE_RUN)")
    modalities = json.loads(path.read_text())["robustness"]["modalities"]
    return {name: curve["accuracy"] for name, curve in modalities.items()}


def _subset(arrays: dict[str, np.ndarray], max_examples: int | None, seed: int
            ) -> tuple[dict[str, np.ndarray], str]:
    n = len(arrays["label"])
    if max_examples is None or max_examples >= n:
        return arrays, "all examples of the split"
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))
    how = f"random subset without replacement (numpy default_rng({seed}).choice)"
    return {k: np.asarray(v)[keep] for k, v in arrays.items()}, how


def _streamed_subset(dataset: MultimodalDataset, split: str, max_examples: int | None,
                     seed: int) -> tuple[dict[str, np.ndarray], str]:
    """A streaming dataset's evaluation examples: a seeded reservoir sample read in one pass."""
    n = STREAM_EXAMPLES if max_examples is None else max_examples
    arrays, total = dataset.sample(split, n, seed)
    if len(arrays["label"]) == total:
        return arrays, "all examples of the sharded split, streamed"
    return arrays, (f"uniform random sample without replacement, reservoir sampling over one "
                    f"streamed pass of the sharded split (seed {seed})")


def evaluate_run(
    run_dir: str | Path,
    model: keras.Model | None = None,
    dataset: MultimodalDataset | None = None,
    levels: int = 5,
    seed: int = 0,
    *,
    split: str = "test",
    max_examples: int | None = None,
    baseline: str | Path | None = None,
) -> dict:
    """Evaluate the run in ``run_dir`` on ``split``; write the report and figures there.

    ``model`` defaults to ``<run_dir>/model.keras`` and ``dataset`` to the one rebuilt from
    ``config.yaml`` (both are passed by the trainer, which has them in memory). ``levels`` is the
    number of corruption levels after the clean one, ``seed`` fixes the noise (and the subset
    when ``max_examples`` is set: a random subset of that size, without replacement). A
    streaming dataset (:class:`~mmkeras.data.prepared.PreparedDataset`) is never read whole:
    it is evaluated on a reservoir sample of ``max_examples`` (default ``STREAM_EXAMPLES``,
    2000) examples drawn in one streamed pass with ``seed``. ``report["subset"]`` says which
    examples were evaluated (``examples``, ``of``, ``how``).
    ``baseline`` is another run folder (or its ``evaluation.json``) whose robustness curves are
    the reference for effective robustness; by default the chance model's flat curve is.

    Returns the report written to ``evaluation.json``; ``report["files"]`` lists what was written.
    Raises :class:`EvaluationError` for a folder that is not a finished run, an unknown split
    or a baseline evaluated with other levels.
    """
    run_dir = Path(run_dir)
    cfg, card = read_run(run_dir, need_model=model is None)
    if levels < 1:
        raise EvaluationError(f"levels must be >= 1, got {levels}")
    if dataset is None:
        from data_pipelines import load_dataset

        dataset = load_dataset(cfg["dataset"], strict=bool(cfg.get("strict", False)),
                               **cfg.get("dataset_args", {}))
    dataset = dataset.select(list(card["modalities"]))
    if list(dataset.class_names) != list(card["class_names"]):
        raise EvaluationError(f"the dataset's classes {dataset.class_names} differ from the "
                              f"run's {card['class_names']}: pass the dataset it was trained on")
    if split not in dataset.splits:
        raise EvaluationError(f"unknown split {split!r}; available: {sorted(dataset.splits)}")
    if model is None:
        model = load_run_model(run_dir / "model.keras", EvaluationError)
    baseline_curves = _baseline_curves(baseline) if baseline is not None else None

    if dataset.streaming:
        arrays, how = _streamed_subset(dataset, split, max_examples, seed)
    else:
        arrays, how = _subset(dataset.splits[split], max_examples, seed)
    y_true = np.asarray(arrays["label"])
    inputs = {name: arrays[name] for name in dataset.modalities}
    class_names = list(dataset.class_names)
    outputs = predict(model, inputs, batch_size=BATCH_SIZE)
    probabilities = outputs["probabilities"]

    metrics = classification_metrics(y_true, probabilities.argmax(-1), class_names)
    metrics["roc_auc"] = roc_auc_ovr(y_true, probabilities, class_names)
    metrics["calibration"] = expected_calibration_error(y_true, probabilities, ECE_BINS)

    contribution = modality_contribution(model, inputs, y_true, probabilities, BATCH_SIZE)
    weights = outputs.get("modality_weights")
    contribution["weights_per_class"] = (
        None if weights is None
        else weights_per_class(weights, y_true, class_names, list(dataset.modalities)))
    contribution["mean_weights"] = (
        None if weights is None
        else dict(zip(dataset.modalities, map(float, weights.mean(axis=0)), strict=True)))

    curves = robustness_curves(model, inputs, y_true, dataset.modalities, metrics["accuracy"],
                               levels=levels, seed=seed, batch_size=BATCH_SIZE)
    for name, curve in curves.items():
        reference = None if baseline_curves is None else baseline_curves.get(name)
        if baseline_curves is not None and reference is None:
            curve["effective_robustness"] = None
            continue
        try:
            curve["effective_robustness"] = effective_robustness(curve["accuracy"], reference)
        except ValueError as err:
            raise EvaluationError(f"baseline {baseline}: {err}") from None

    suffix = "" if split == "test" else f"_{split}"
    prefix = "eval_" if split == "test" else f"eval_{split}_"
    files: dict[str, str] = {}

    def figure(key: str, name: str, draw: Callable[[Path], Any]) -> None:
        path = run_dir / f"{prefix}{name}.png"
        with atomic_path(path) as tmp:
            draw(tmp)
        files[key] = str(path)

    figure("confusion_matrix", "confusion_matrix",
           lambda p: plot_confusion(metrics["confusion_matrix"], class_names, p))
    figure("reliability", "reliability", lambda p: plot_reliability(metrics["calibration"], p))
    if contribution["weights_per_class"] is not None:
        figure("modality_weights", "modality_weights",
               lambda p: plot_modality_weights(contribution["weights_per_class"], p))
    for name, curve in curves.items():
        figure(f"robustness_{name}", f"robustness_{name}",
               lambda p, n=name, c=curve: plot_robustness(n, c, 1 / len(class_names), p))

    report = {
        "run_dir": str(run_dir),
        "split": split,
        "num_examples": len(y_true),
        "max_examples": max_examples,
        "subset": {"examples": len(y_true), "of": dataset.num_examples(split), "how": how},
        "seed": seed,
        "levels": levels,
        "fusion": cfg.get("fusion"),
        "metrics": metrics,
        "contribution": contribution,
        "robustness": {"baseline": "chance" if baseline is None else str(baseline),
                       "modalities": curves},
    }
    json_path = run_dir / f"evaluation{suffix}.json"
    report["files"] = {"report": str(json_path), **files}
    write_json(json_path, report)
    return report


def format_summary(report: dict) -> str:
    """The short table printed by ``python -m mmkeras.evaluate``."""
    m, subset = report["metrics"], report["subset"]
    auc = m["roc_auc"]["macro"]
    lines = [
        f"{report['run_dir']}: {report['split']} split, {report['num_examples']} examples"
        + ("" if subset["examples"] == subset["of"] else f" of {subset['of']} ({subset['how']})"),
        f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ROC-AUC "
        f"{'n/a' if auc is None else f'{auc:.4f}'}  ECE {m['calibration']['ece']:.4f}",
    ]
    if m["roc_auc"]["absent_classes"]:
        lines.append(f"  (ROC-AUC without absent classes {m['roc_auc']['absent_classes']})")
    contribution, curves = report["contribution"], report["robustness"]["modalities"]
    weights = contribution["mean_weights"]
    lines.append(f"{'modality':<14}{'absent acc':>11}{'drop':>8}{'rel.rob':>9}"
                 f"{'eff.rob':>9}{'weight':>8}")
    for name, absent in contribution["absent"].items():
        eff = curves[name]["effective_robustness"]
        weight = "" if weights is None else f"{weights[name]:.3f}"
        lines.append(f"{name:<14}{absent['accuracy']:>11.4f}{absent['drop']:>+8.4f}"
                     f"{curves[name]['relative_robustness']:>9.4f}"
                     f"{'n/a' if eff is None else f'{eff:.4f}':>9}{weight:>8}")
    lines.append(f"effective robustness against: {report['robustness']['baseline']}")
    lines.extend(f"  {key:<24}{path}" for key, path in report["files"].items())
    return "\n".join(lines)
