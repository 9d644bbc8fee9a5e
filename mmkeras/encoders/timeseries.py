"""Convolutional encoder for standardised multichannel time series ``[batch, T, C]``."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder, downsample_mask, masked_mean
from mmkeras.encoders.inputs import check_input, masked_max, zero_masked_steps
from mmkeras.registry import register_encoder


@register_encoder("conv1d")
class TimeSeriesEncoder(Encoder):
    """Strided 1-D convolutions (a small temporal CNN, Wang et al. 2017 "Time series
    classification from scratch with deep neural networks: a strong baseline").

    Each block halves the time axis while it is at least ``min_stride_length`` long, so the same
    encoder serves a 1000-sample vibration window and an 8-sample temperature window.

    - ``tokens``: the steps of the last feature map, each projected to ``embed_dim`` (linear).
    - ``mask``: ``step_mask`` carried to token resolution (a token is valid when any of its
      steps is); masked input steps are set to zero before the convolutions, so their values
      never reach any output.
    - ``pooled`` (documented alternative to the mean of tokens): ``relu(Dense)`` of the masked
      average and masked maximum of the last feature map over time; the maximum keeps short
      transients (bearing impacts) that an average dilutes.

    Example:
        >>> enc = TimeSeriesEncoder(embed_dim=8, filters=(4, 8))
        >>> out = enc(keras.ops.zeros((2, 64, 3)))
        >>> tuple(out["tokens"].shape), tuple(out["mask"].shape), tuple(out["pooled"].shape)
        ((2, 16, 8), (2, 16), (2, 8))
    """

    input_kinds = ("sequence",)
    takes_step_mask = True

    def __init__(
        self,
        embed_dim: int = 64,
        filters: tuple[int, ...] = (32, 64, 64),
        kernel_size: int = 7,
        min_stride_length: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if not filters or kernel_size < 1 or min_stride_length < 1:
            raise ValueError(
                f"TimeSeriesEncoder: filters must name at least one block and kernel_size, "
                f"min_stride_length must be >= 1; got filters={filters}, "
                f"kernel_size={kernel_size}, min_stride_length={min_stride_length}"
            )
        self.filters = tuple(int(n) for n in filters)
        self.kernel_size = int(kernel_size)
        self.min_stride_length = int(min_stride_length)
        self.convs: list[keras.layers.Layer] = []
        self.stride = 1
        self.tokenize = keras.layers.Dense(self.embed_dim) if self.return_tokens else None
        self.project = (keras.layers.Dense(self.embed_dim, activation="relu")
                        if self.return_pooled else None)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        shape = tuple(input_shape)
        for n in self.filters:
            length = shape[1]
            stride = 2 if length is not None and length >= self.min_stride_length else 1
            conv = keras.layers.Conv1D(
                n, self.kernel_size, strides=stride, padding="same", activation="relu"
            )
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            self.convs.append(conv)
            self.stride *= stride
        if self.tokenize is not None:
            self.tokenize.build(shape)
        if self.project is not None:
            self.project.build((shape[0], 2 * self.filters[-1]))

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        x = zero_masked_steps(x, step_mask)
        for conv in self.convs:
            x = conv(x)
        if step_mask is None:
            mask = keras.ops.ones(keras.ops.shape(x)[:2], dtype="float32")
        else:
            mask = downsample_mask(step_mask, self.stride, keras.ops.shape(x)[1])
        pooled = None
        if self.return_pooled:
            summary = [masked_mean(x, mask), masked_max(x, mask)]
            pooled = self.project(keras.ops.concatenate(summary, axis=-1))
        if not self.return_tokens:
            return self.outputs(pooled)
        return self.outputs(pooled, self.tokenize(x), mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "min_stride_length": self.min_stride_length,
        }

