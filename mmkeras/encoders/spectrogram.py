"""Convolutional encoder for standardised spectrograms ``[batch, frames, bands]``."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class SpectrogramEncoder(keras.layers.Layer):
    """1-D convolutions over time with the frequency bands as channels, then a dense embedding.

    Treating mel bands as channels keeps *which* frequencies are active visible to every filter
    (2-D convolutions followed by global pooling average that away: on avdigits audio they stayed
    at chance, 0.10 validation accuracy after 8 epochs, against 0.6 for this encoder). Each block
    is convolution, batch normalisation and max-pooling by 2; the time axis is then summarised
    by global average and max pooling.

    Example:
        >>> enc = SpectrogramEncoder(embed_dim=32)
        >>> enc(keras.ops.zeros((2, 63, 40))).shape
        (2, 32)
    """

    def __init__(
        self,
        embed_dim: int = 64,
        filters: tuple[int, ...] = (64, 128, 128),
        kernel_size: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.filters = tuple(filters)
        self.kernel_size = kernel_size
        self.blocks = [
            (keras.layers.Conv1D(n, kernel_size, padding="same", activation="relu"),
             keras.layers.BatchNormalization(),
             keras.layers.MaxPooling1D(2, padding="same"))
            for n in self.filters
        ]
        self.pool_avg = keras.layers.GlobalAveragePooling1D()
        self.pool_max = keras.layers.GlobalMaxPooling1D()
        self.project = keras.layers.Dense(embed_dim, activation="relu")

    def build(self, input_shape: tuple) -> None:
        shape = tuple(input_shape)
        for conv, norm, pool in self.blocks:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
            shape = pool.compute_output_shape(shape)
        self.project.build((shape[0], 2 * self.filters[-1]))

    def call(self, x, training=None):
        for conv, norm, pool in self.blocks:
            x = pool(norm(conv(x), training=training))
        return self.project(keras.ops.concatenate([self.pool_avg(x), self.pool_max(x)], axis=-1))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.embed_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
        }
