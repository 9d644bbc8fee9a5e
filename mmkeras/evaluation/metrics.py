"""Ranking and calibration metrics on predicted class probabilities.

``roc_auc_ovr`` is scikit-learn's one-vs-rest ROC-AUC, per class and macro-averaged, computed on
the classes that occur in ``y_true`` (a class with no positive example has no ROC curve; those
classes are listed instead). ``expected_calibration_error`` is the top-label ECE of Guo et al.
(2017, "On Calibration of Modern Neural Networks"): the confidence of each prediction is its
highest probability; predictions fall into ``bins`` equal-width confidence bins ``((b-1)/B, b/B]``
and ECE is the example-weighted mean of ``|accuracy - mean confidence|`` over the bins.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

ECE_BINS = 15


def roc_auc_ovr(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict:
    """One-vs-rest ROC-AUC per class and their macro mean, over the classes present in ``y_true``.

    With every class present, ``macro`` equals ``sklearn.metrics.roc_auc_score(y_true,
    probabilities, multi_class="ovr", average="macro")``. Classes without a positive example go
    to ``absent_classes``; with fewer than two classes present ``macro`` is ``None``.

    Example:
        >>> y = np.array([0, 0, 1, 1])
        >>> p = np.array([[.9, .1, 0], [.4, .6, 0], [.3, .7, 0], [.2, .8, 0]])
        >>> r = roc_auc_ovr(y, p, ["a", "b", "c"])
        >>> r["macro"], r["absent_classes"]
        (1.0, ['c'])
    """
    y_true = np.asarray(y_true)
    present = [k for k in range(len(class_names)) if np.any(y_true == k)]
    absent = [class_names[k] for k in range(len(class_names)) if k not in present]
    per_class: dict[str, float | None] = {name: None for name in class_names}
    if len(present) >= 2:
        for k in present:
            per_class[class_names[k]] = float(roc_auc_score(y_true == k, probabilities[:, k]))
    scores = [per_class[class_names[k]] for k in present if per_class[class_names[k]] is not None]
    return {
        "macro": float(np.mean(scores)) if scores else None,
        "per_class": per_class,
        "absent_classes": absent,
    }


def expected_calibration_error(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> dict:
    """Top-label expected calibration error over ``bins`` equal-width confidence bins.

    Returns ``ece`` and, per bin, its ``lower``/``upper`` edges, ``count``, ``accuracy`` and mean
    ``confidence`` (``None`` for empty bins), the data of the reliability diagram.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> round(expected_calibration_error(np.array([0, 1, 0, 1]), p, bins=5)["ece"], 6)
        0.375
    """
    y_true = np.asarray(y_true)
    confidence = np.max(probabilities, axis=1).astype(np.float64)
    correct = (np.argmax(probabilities, axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)  # edges[b] < c <= edges[b + 1]
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        row = {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
               "accuracy": None, "confidence": None}
        if count:
            row["accuracy"] = float(correct[members].mean())
            row["confidence"] = float(confidence[members].mean())
            ece += count / len(y_true) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return {"ece": float(ece), "bins": table}
