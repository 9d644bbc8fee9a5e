"""Helpers shared by the encoders: input-kind checks, step masks, masked pooling.

Example:
    >>> import numpy as np
    >>> x = np.array([[[1.0], [5.0], [3.0]]], "float32")
    >>> keras.ops.convert_to_numpy(masked_max(x, np.array([[1.0, 0.0, 1.0]], "float32")))
    array([[3.]], dtype=float32)
"""

from __future__ import annotations

import keras

# The rank of each kind in mmkeras.encoders.base.INPUT_KINDS.
KIND_RANKS = {"sequence": 3, "image": 4, "tokens": 2, "vector": 2}
KIND_SHAPES = {
    "sequence": "[batch, steps, channels] float",
    "image": "[batch, height, width, channels] float",
    "tokens": "[batch, length] integer token ids",
    "vector": "[batch, features] float",
}


def check_input(encoder: keras.layers.Layer, shape: tuple, dtype: str | None = None) -> str:
    """The input kind (among ``encoder.input_kinds``) that ``shape``/``dtype`` is; else an error.

    Rank 2 is ``tokens`` when the dtype is an integer and ``vector`` otherwise; in ``build`` (no
    dtype yet) either is accepted.
    """
    rank = len(shape)
    kinds = [k for k in encoder.input_kinds if KIND_RANKS[k] == rank]
    if dtype is not None:
        dtype = keras.backend.standardize_dtype(dtype)
        is_int = "int" in dtype
        kinds = [k for k in kinds if rank != 2 or (k == "tokens") == is_int]
    if not kinds:
        expected = " or ".join(KIND_SHAPES[k] for k in encoder.input_kinds)
        name = getattr(type(encoder), "registered_name", type(encoder).__name__)
        got = f"shape {tuple(shape)}" + (f" dtype {dtype}" if dtype is not None else "")
        raise ValueError(
            f"{type(encoder).__name__} (encoder {name!r}, input kinds {encoder.input_kinds}) "
            f"takes {expected}; got input of {got}"
        )
    return kinds[0]


def reject_step_mask(encoder: keras.layers.Layer, step_mask) -> None:
    """Encoders whose inputs have no time steps accept ``step_mask=None`` only."""
    if step_mask is not None:
        raise ValueError(
            f"{type(encoder).__name__}: step_mask applies to time steps, and its "
            f"{encoder.input_kinds} input has none; pass step_mask=None"
        )


def zero_masked_steps(x, step_mask):
    """``x`` ``[B, T, ...]`` with exact zeros at the steps where ``step_mask`` ``[B, T]`` is 0."""
    if step_mask is None:
        return x
    keep = keras.ops.reshape(keras.ops.cast(step_mask, "float32") > 0,
                             (-1, keras.ops.shape(x)[1]) + (1,) * (len(x.shape) - 2))
    return keras.ops.where(keep, x, keras.ops.zeros_like(x))


def all_valid(tokens):
    """A float32 mask of ones ``[B, N]`` for ``tokens`` ``[B, N, D]``."""
    return keras.ops.ones(keras.ops.shape(tokens)[:2], dtype="float32")


def masked_max(x, mask):
    """Maximum of ``x`` ``[B, N, D]`` over valid positions of ``mask`` ``[B, N]`` (0 if none)."""
    valid = keras.ops.cast(mask, "float32")[..., None] > 0
    lowest = keras.ops.min(x) - 1
    best = keras.ops.max(keras.ops.where(valid, x, lowest), axis=1)
    return keras.ops.where(keras.ops.any(valid, axis=1), best, keras.ops.zeros_like(best))
