"""Recurrent encoder for time series ``[batch, T, C]``."""

from __future__ import annotations

import math

import keras

from mmkeras.encoders.base import Encoder, downsample_mask, masked_mean
from mmkeras.encoders.inputs import check_input, zero_masked_steps
from mmkeras.registry import register_encoder


@register_encoder("gru")
class GRUEncoder(Encoder):
    """A Conv1D front end, then a (bidirectional) GRU over the steps (Cho et al. 2014; the
    convolution-then-recurrence layout of DeepConvLSTM, Ordóñez and Roggen 2016).

    The convolution's stride is the smallest that leaves at most ``max_steps`` steps (1000 ->
    125 by default; 1 for short series or an unknown length), so the recurrence stays short.

    - ``tokens``: the GRU's outputs at every step, projected to ``embed_dim``;
    - ``mask``: ``step_mask`` carried to the GRU's steps; masked input steps are zeroed and the
      GRU skips masked steps (Keras ``mask=``), so they never change a valid output;
    - ``pooled``: masked mean of the tokens.

    Example:
        >>> enc = GRUEncoder(embed_dim=8, units=4, conv_filters=4)
        >>> out = enc(keras.ops.zeros((2, 1000, 3)))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((2, 125, 8), (2, 8))
    """

    input_kinds = ("sequence",)
    takes_step_mask = True

    def __init__(
        self,
        embed_dim: int = 64,
        units: int = 64,
        bidirectional: bool = True,
        conv_filters: int = 64,
        kernel_size: int = 5,
        max_steps: int = 128,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if min(int(units), int(conv_filters), int(kernel_size), int(max_steps)) < 1:
            raise ValueError(
                f"GRUEncoder: units, conv_filters, kernel_size and max_steps must be >= 1; got "
                f"units={units}, conv_filters={conv_filters}, kernel_size={kernel_size}, "
                f"max_steps={max_steps}"
            )
        self.units = int(units)
        self.bidirectional = bool(bidirectional)
        self.conv_filters = int(conv_filters)
        self.kernel_size = int(kernel_size)
        self.max_steps = int(max_steps)
        gru = keras.layers.GRU(self.units, return_sequences=True)
        self.rnn = keras.layers.Bidirectional(gru) if self.bidirectional else gru
        self.conv: keras.layers.Conv1D | None = None
        self.tokenize = keras.layers.Dense(self.embed_dim)
        self.stride = 1

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        steps = input_shape[1]
        self.stride = 1 if steps is None else max(1, math.ceil(steps / self.max_steps))
        self.conv = keras.layers.Conv1D(self.conv_filters, max(self.kernel_size, self.stride),
                                        strides=self.stride, padding="same", activation="relu")
        self.conv.build(input_shape)
        shape = self.conv.compute_output_shape(input_shape)
        self.rnn.build(shape)
        self.tokenize.build(self.rnn.compute_output_shape(shape))

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        h = self.conv(zero_masked_steps(x, step_mask))
        if step_mask is None:
            mask = keras.ops.ones(keras.ops.shape(h)[:2], dtype="float32")
        else:
            mask = downsample_mask(step_mask, self.stride, keras.ops.shape(h)[1])
        tokens = self.tokenize(self.rnn(h, mask=mask > 0, training=training))
        return self.outputs(masked_mean(tokens, mask), tokens, mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "bidirectional": self.bidirectional,
            "conv_filters": self.conv_filters,
            "kernel_size": self.kernel_size,
            "max_steps": self.max_steps,
        }
