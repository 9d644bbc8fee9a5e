"""Convolutional encoder for token ids ``[batch, length]`` (0 = padding)."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder
from mmkeras.encoders.inputs import check_input, masked_max, reject_step_mask, zero_masked_steps
from mmkeras.registry import register_encoder


@register_encoder("text_cnn")
class TextCNNEncoder(Encoder):
    """Word embeddings, parallel 1-D convolutions of several widths, max-over-time pooling
    (Kim 2014, "Convolutional neural networks for sentence classification").

    Padding embeddings are zeroed before the convolutions (so a sentence's features do not depend
    on how much padding follows it).

    - ``tokens``: each position's concatenated convolution features projected to ``embed_dim``;
    - ``mask``: token id != 0;
    - ``pooled`` (documented alternative to the mean of tokens): ``relu(Dense)`` of the masked
      maximum over time of the convolution features, Kim's max-over-time pooling.

    Example:
        >>> enc = TextCNNEncoder(vocab_size=50, embed_dim=8, token_dim=8, filters=4)
        >>> out = enc(keras.ops.convert_to_tensor([[3, 4, 9, 0]], dtype="int64"))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((1, 4, 8), (1, 8))
    """

    input_kinds = ("tokens",)

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        token_dim: int = 64,
        filters: int = 64,
        kernel_sizes: tuple[int, ...] = (3, 5),
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if int(vocab_size) < 2 or int(token_dim) < 1 or int(filters) < 1 or not kernel_sizes:
            raise ValueError(
                f"TextCNNEncoder: vocab_size must be >= 2, token_dim and filters >= 1 and "
                f"kernel_sizes non-empty; got vocab_size={vocab_size}, token_dim={token_dim}, "
                f"filters={filters}, kernel_sizes={kernel_sizes}"
            )
        self.vocab_size = int(vocab_size)
        self.token_dim = int(token_dim)
        self.filters = int(filters)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.embedding = keras.layers.Embedding(self.vocab_size, self.token_dim)
        self.convs = [
            keras.layers.Conv1D(self.filters, k, padding="same", activation="relu")
            for k in self.kernel_sizes
        ]
        self.tokenize = keras.layers.Dense(self.embed_dim) if self.return_tokens else None
        self.project = (keras.layers.Dense(self.embed_dim, activation="relu")
                        if self.return_pooled else None)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        self.embedding.build(input_shape)
        for conv in self.convs:
            conv.build((*input_shape, self.token_dim))
        features = (*input_shape, self.filters * len(self.convs))
        if self.tokenize is not None:
            self.tokenize.build(features)
        if self.project is not None:
            self.project.build((input_shape[0], features[-1]))

    def call(self, token_ids, step_mask=None, training=None):
        check_input(self, token_ids.shape, token_ids.dtype)
        reject_step_mask(self, step_mask)
        mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")
        words = zero_masked_steps(self.embedding(token_ids), mask)
        features = keras.ops.concatenate([conv(words) for conv in self.convs], axis=-1)
        pooled = self.project(masked_max(features, mask)) if self.return_pooled else None
        if not self.return_tokens:
            return self.outputs(pooled)
        return self.outputs(pooled, self.tokenize(features), mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "token_dim": self.token_dim,
            "filters": self.filters,
            "kernel_sizes": list(self.kernel_sizes),
        }
