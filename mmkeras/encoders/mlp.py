"""Encoder for tabular feature vectors ``[batch, features]``."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder
from mmkeras.encoders.inputs import check_input, zero_masked_steps
from mmkeras.registry import register_encoder


@register_encoder("mlp")
class MLPEncoder(Encoder):
    """A Dense stack over the whole vector, and one token per feature (the feature tokenizer of
    FT-Transformer, Gorishniy et al. 2021: ``token_f = x_f * W_f + b_f``).

    - ``tokens``: ``[B, F, embed_dim]``, one per feature, so attention fusions can attend to
      single measurements;
    - ``mask``: all ones, or ``step_mask`` ``[B, F]`` (1 = feature observed) when given; missing
      features are set to 0 (the training mean of standardised data) before anything else;
    - ``pooled`` (documented alternative to the mean of tokens, which would be linear in
      ``x``): the Dense stack, ``hidden_units`` ``relu`` layers (with ``dropout``) and a ``relu``
      layer of ``embed_dim``, over the whole vector.

    Example:
        >>> enc = MLPEncoder(embed_dim=8, hidden_units=(16,))
        >>> out = enc(keras.ops.zeros((2, 10)))
        >>> tuple(out["tokens"].shape), tuple(out["mask"].shape), tuple(out["pooled"].shape)
        ((2, 10, 8), (2, 10), (2, 8))
    """

    input_kinds = ("vector",)
    takes_step_mask = True

    def __init__(
        self,
        embed_dim: int = 64,
        hidden_units: tuple[int, ...] = (64,),
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if any(int(n) < 1 for n in hidden_units) or not 0 <= dropout < 1:
            raise ValueError(f"MLPEncoder: hidden_units must be >= 1 and dropout in [0, 1); got "
                             f"hidden_units={hidden_units}, dropout={dropout}")
        self.hidden_units = tuple(int(n) for n in hidden_units)
        self.dropout = float(dropout)
        self.stack = []  # serves pooled alone
        if self.return_pooled:
            for n in self.hidden_units:
                self.stack += [keras.layers.Dense(n, activation="relu"),
                               keras.layers.Dropout(self.dropout)]
            self.stack.append(keras.layers.Dense(self.embed_dim, activation="relu"))

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"MLPEncoder needs a static number of features, got input shape "
                             f"{tuple(input_shape)}")
        if self.return_tokens:
            self.feature_weights = self.add_weight(
                shape=(features, self.embed_dim), name="feature_weights",
                initializer=keras.initializers.RandomNormal(stddev=1.0 / self.embed_dim**0.5),
            )
            self.feature_biases = self.add_weight(
                shape=(features, self.embed_dim), name="feature_biases", initializer="zeros"
            )
        shape = tuple(input_shape)
        for layer in self.stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        x = zero_masked_steps(x, step_mask)
        pooled = x if self.return_pooled else None
        for layer in self.stack:
            pooled = layer(pooled, training=training)
        if not self.return_tokens:
            return self.outputs(pooled)
        weights = keras.ops.cast(self.feature_weights, x.dtype)
        biases = keras.ops.cast(self.feature_biases, x.dtype)
        tokens = x[:, :, None] * weights + biases
        if step_mask is None:
            mask = keras.ops.ones(keras.ops.shape(x), dtype="float32")
        else:
            mask = keras.ops.cast(step_mask, "float32")
        return self.outputs(pooled, tokens, mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "dropout": self.dropout}
