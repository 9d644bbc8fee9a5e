"""Bag-of-embeddings encoder for token ids from ``keras.layers.TextVectorization``."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class TextEncoder(keras.layers.Layer):
    """Token embeddings averaged over non-padding tokens, then a dense embedding.

    Example:
        >>> enc = TextEncoder(vocab_size=100, embed_dim=16)
        >>> enc(keras.ops.ones((2, 12), dtype="int64")).shape
        (2, 16)
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, token_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.token_dim = token_dim
        self.embedding = keras.layers.Embedding(vocab_size, token_dim)
        self.project = keras.layers.Dense(embed_dim, activation="relu")

    def build(self, input_shape: tuple) -> None:
        self.embedding.build(input_shape)
        self.project.build((input_shape[0], self.token_dim))

    def call(self, token_ids):
        weights = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")[..., None]
        summed = keras.ops.sum(self.embedding(token_ids) * weights, axis=1)
        return self.project(summed / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.embed_dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
            "token_dim": self.token_dim,
        }
