"""Pieces the fusion family shares: input checks, absent modalities removed, pooled stacks.

Every fusion starts with :func:`drop_absent`: each tensor of an absent modality becomes exact
zeros, so nothing it held (finite or not) can reach an output; what the fusion then does with
an absent modality (exclude it, or put a learned missing-embedding in its place) is its own rule.

Example:
    >>> import numpy as np
    >>> features = [{"pooled": np.full((2, 3), 5.0, "float32")}]
    >>> kept = drop_absent(features, np.array([[1.0], [0.0]], "float32"))
    >>> keras.ops.convert_to_numpy(kept[0]["pooled"]).tolist()
    [[5.0, 5.0, 5.0], [0.0, 0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mmkeras.fusion.base import where_present


def present_column(presence, m: int):
    """``[B, 1]`` boolean: whether modality ``m`` is present in each example."""
    return keras.ops.cast(presence[:, m : m + 1], "float32") > 0


def drop_absent(features: Sequence[dict], presence) -> list[dict]:
    """Every tensor of modality ``m`` replaced by zeros in the examples where it is absent."""
    return [
        {key: where_present(value, presence[:, m]) for key, value in feature.items()}
        for m, feature in enumerate(features)
    ]


def check_inputs(
    layer: keras.layers.Layer, features_shape, presence_shape, keys: Sequence[str]
) -> int:
    """Validate ``features`` (one dict per modality with ``keys``) against ``presence``.

    Returns the number of modalities; raises ``ValueError`` naming the argument at fault.
    """
    name = type(layer).__name__
    if not isinstance(features_shape, list | tuple) or not features_shape:
        raise ValueError(f"{name}: features must be a non-empty list with one dict per "
                         f"modality, got {features_shape!r}")
    for m, feature in enumerate(features_shape):
        missing = [key for key in keys if not isinstance(feature, dict) or key not in feature]
        if missing:
            hint = ("; a fusion that reads tokens sets uses_tokens = True, so the encoders "
                    "return them" if {"tokens", "mask"} & set(missing) else
                    "; a fusion that reads pooled keeps uses_pooled = True, so the encoders "
                    "return it" if "pooled" in missing else "")
            raise ValueError(f"{name}: features[{m}] lacks {missing} (needs {list(keys)}){hint}")
    num_modalities = len(features_shape)
    if len(presence_shape) != 2 or presence_shape[-1] not in (None, num_modalities):
        raise ValueError(f"{name}: presence must be [batch, {num_modalities}] (one column per "
                         f"modality), got shape {tuple(presence_shape)}")
    return num_modalities


def pooled_size(layer: keras.layers.Layer, features_shape) -> int:
    """The common size of the ``pooled`` vectors; ``ValueError`` when they differ."""
    sizes = [feature["pooled"][-1] for feature in features_shape]
    if len(set(sizes)) != 1:
        raise ValueError(f"{type(layer).__name__}: features[i]['pooled'] must all have the "
                         f"same size to be combined, got {sizes}")
    return int(sizes[0])


def stack_pooled(features: Sequence[dict]):
    """``[B, M, D]``: the modalities' pooled vectors side by side."""
    return keras.ops.stack([feature["pooled"] for feature in features], axis=1)


def weighted_sum(weights, values):
    """``sum_m weights[:, m] * values[:, m]``: ``[B, M]`` (float32) times ``[B, M, D]``."""
    weights = keras.ops.cast(weights, values.dtype)
    return keras.ops.sum(weights[:, :, None] * values, axis=1)


def add_missing_embeddings(layer: keras.layers.Layer, sizes: Sequence[int]) -> list:
    """One learned vector per modality (``missing_<m>``, zeros at first) to stand in for it."""
    return [layer.add_weight(shape=(int(size),), initializer="zeros", name=f"missing_{m}")
            for m, size in enumerate(sizes)]


def fill_missing(x, present, embedding):
    """``x`` ``[B, F]`` where ``present`` ``[B, 1]``, the missing-embedding ``[F]`` elsewhere."""
    return keras.ops.where(present, x, keras.ops.cast(embedding, x.dtype)[None, :])
