"""Convolutional encoder for standardised spectrograms ``[batch, frames, bands]``."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class SpectrogramEncoder(keras.layers.Layer):
    """2-D convolutions over (time, frequency) with pooling, then a dense embedding.

    Example:
        >>> enc = SpectrogramEncoder(embed_dim=32)
        >>> enc(keras.ops.zeros((2, 63, 40))).shape
        (2, 32)
    """

    def __init__(self, embed_dim: int = 64, filters: tuple[int, ...] = (16, 32, 64), **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.filters = tuple(filters)
        self.blocks = [
            (keras.layers.Conv2D(n, 3, padding="same", activation="relu"),
             keras.layers.MaxPooling2D(2, padding="same"))
            for n in self.filters
        ]
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.project = keras.layers.Dense(embed_dim, activation="relu")

    def build(self, input_shape: tuple) -> None:
        shape = (*input_shape, 1)
        for conv, pool in self.blocks:
            conv.build(shape)
            shape = pool.compute_output_shape(conv.compute_output_shape(shape))
        self.project.build((shape[0], self.filters[-1]))

    def call(self, x):
        x = keras.ops.expand_dims(x, -1)
        for conv, pool in self.blocks:
            x = pool(conv(x))
        return self.project(self.pool(x))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.embed_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "embed_dim": self.embed_dim, "filters": list(self.filters)}
