"""Intermediate fusion: combine encoder embeddings, then a shared head."""

from __future__ import annotations

import keras

MODES = ("concat", "sum", "gated")


@keras.saving.register_keras_serializable(package="mmkeras")
class IntermediateFusion(keras.layers.Layer):
    """Combine per-modality embeddings ``[batch, D_i]`` into one vector.

    Modes: ``concat`` (``[batch, sum D_i]``), ``sum`` (equal ``D``) and ``gated`` (equal ``D``;
    a learned softmax gate per example weights the modalities, so an uninformative or missing
    modality can be turned down).

    Example:
        >>> IntermediateFusion("concat")([keras.ops.ones((2, 8)), keras.ops.ones((2, 8))]).shape
        (2, 16)
    """

    def __init__(self, mode: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"IntermediateFusion mode {mode!r}: choose one of {MODES}")
        self.mode = mode
        self.gate = keras.layers.Dense(1) if mode == "gated" else None

    def build(self, input_shapes: list) -> None:
        if self.mode != "concat" and len({s[-1] for s in input_shapes}) != 1:
            raise ValueError(f"mode {self.mode!r} needs equal embedding sizes, got {input_shapes}")
        if self.gate is not None:
            self.gate.build(input_shapes[0])

    def call(self, embeddings: list):
        embeddings = list(embeddings)
        if self.mode == "concat":
            return keras.ops.concatenate(embeddings, axis=-1)
        stacked = keras.ops.stack(embeddings, axis=1)  # [B, M, D]
        if self.mode == "sum":
            return keras.ops.sum(stacked, axis=1)
        weights = keras.ops.softmax(self.gate(stacked), axis=1)  # [B, M, 1]
        return keras.ops.sum(weights * stacked, axis=1)

    def compute_output_shape(self, input_shapes: list) -> tuple:
        if self.mode == "concat":
            return (input_shapes[0][0], sum(s[-1] for s in input_shapes))
        return tuple(input_shapes[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}
