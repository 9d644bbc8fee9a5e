"""What each modality contributes: accuracy with it marked absent, and fusion weights per class.

A modality is marked absent through the model's presence input (``<modality>_present = 0`` for
every example), so the fusion excludes it the way it does at serving time; its raw input is
still fed and has no effect.
"""

from __future__ import annotations

import keras
import numpy as np

from mmkeras.evaluation.predict import predict


def modality_contribution(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    y_true: np.ndarray,
    all_present: np.ndarray,
    batch_size: int = 64,
) -> dict:
    """Accuracy with each modality absent, its drop from ``all_present``'s accuracy.

    ``all_present`` is the clean probabilities of the same examples. Per modality: ``accuracy``,
    ``drop`` (all-present accuracy minus it) and ``changed`` (fraction of examples whose
    predicted class changes).

    Example:
        c = modality_contribution(model, inputs, labels, probabilities)
        c["absent"]["audio"]["drop"]
    """
    reference = all_present.argmax(-1)
    accuracy = float(np.mean(reference == y_true))
    absent = {}
    for name in inputs:
        predicted = predict(model, inputs, absent=(name,), batch_size=batch_size)
        predicted = predicted["probabilities"].argmax(-1)
        acc = float(np.mean(predicted == y_true))
        absent[name] = {"accuracy": acc, "drop": accuracy - acc,
                        "changed": float(np.mean(predicted != reference))}
    return {"all_present_accuracy": accuracy, "absent": absent}


def weights_per_class(
    weights: np.ndarray, y_true: np.ndarray, class_names: list[str], modalities: list[str]
) -> dict[str, dict[str, float | None]]:
    """Mean fusion weight of each modality over the examples of each TRUE class.

    ``weights`` is the model's ``modality_weights`` ``[N, M]`` in ``modalities`` order; a class
    without examples gets ``None``.

    Example:
        >>> w = np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0]])
        >>> weights_per_class(w, np.array([0, 0, 1]), ["a", "b", "c"], ["x", "y"])["a"]
        {'x': 0.3, 'y': 0.7}
    """
    table: dict[str, dict[str, float | None]] = {}
    for k, name in enumerate(class_names):
        members = y_true == k
        means = weights[members].mean(axis=0) if members.any() else [None] * len(modalities)
        table[name] = {m: None if v is None else round(float(v), 12)
                       for m, v in zip(modalities, means, strict=True)}
    return table
