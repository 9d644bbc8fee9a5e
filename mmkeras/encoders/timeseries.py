"""Convolutional encoder for standardised multichannel time series ``[batch, T, C]``."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class TimeSeriesEncoder(keras.layers.Layer):
    """Strided 1-D convolutions, global average and max pooling, then a dense embedding.

    Each block halves the time axis while it is at least ``min_stride_length`` long, so the same
    encoder serves a 1000-sample vibration window and an 8-sample temperature window.

    Example:
        >>> enc = TimeSeriesEncoder(embed_dim=32)
        >>> enc(keras.ops.zeros((2, 1000, 3))).shape
        (2, 32)
    """

    def __init__(
        self,
        embed_dim: int = 64,
        filters: tuple[int, ...] = (32, 64, 64),
        kernel_size: int = 7,
        min_stride_length: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.filters = tuple(filters)
        self.kernel_size = kernel_size
        self.min_stride_length = min_stride_length
        self.convs: list[keras.layers.Layer] = []
        self.pool_avg = keras.layers.GlobalAveragePooling1D()
        self.pool_max = keras.layers.GlobalMaxPooling1D()
        self.project = keras.layers.Dense(embed_dim, activation="relu")

    def build(self, input_shape: tuple) -> None:
        length = input_shape[1]
        shape = tuple(input_shape)
        for n in self.filters:
            stride = 2 if length is not None and length >= self.min_stride_length else 1
            conv = keras.layers.Conv1D(
                n, self.kernel_size, strides=stride, padding="same", activation="relu"
            )
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            length = shape[1]
            self.convs.append(conv)
        self.project.build((shape[0], 2 * self.filters[-1]))

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.project(keras.ops.concatenate([self.pool_avg(x), self.pool_max(x)], axis=-1))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.embed_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "min_stride_length": self.min_stride_length,
        }
