"""Transformer encoder for token ids ``[batch, length]`` (0 = padding)."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder, masked_mean
from mmkeras.encoders.inputs import check_input, reject_step_mask
from mmkeras.encoders.transformer_block import TransformerBlock
from mmkeras.registry import register_encoder


@register_encoder("text_transformer")
class TextTransformerEncoder(Encoder):
    """Word embeddings plus learned positions, then Transformer blocks (a small BERT-style
    encoder, Devlin et al. 2019, trained from scratch) with padding excluded from attention.

    - ``tokens``: the contextual word vectors after a final LayerNorm; ``mask``: token id != 0;
    - ``pooled``: masked mean of the tokens.

    Sequences may be up to ``max_length`` tokens long.

    Example:
        >>> enc = TextTransformerEncoder(vocab_size=50, embed_dim=8, num_heads=2, num_layers=1)
        >>> out = enc(keras.ops.convert_to_tensor([[3, 4, 0]], dtype="int64"))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((1, 3, 8), (1, 8))
    """

    input_kinds = ("tokens",)

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.1,
        max_length: int = 512,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if int(vocab_size) < 2 or int(num_layers) < 0 or int(max_length) < 1:
            raise ValueError(
                f"TextTransformerEncoder: vocab_size must be >= 2, num_layers >= 0 and "
                f"max_length >= 1; got vocab_size={vocab_size}, num_layers={num_layers}, "
                f"max_length={max_length}"
            )
        self.vocab_size = int(vocab_size)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = None if mlp_dim is None else int(mlp_dim)
        self.dropout = float(dropout)
        self.max_length = int(max_length)
        self.embedding = keras.layers.Embedding(self.vocab_size, self.embed_dim)
        self.blocks = [
            TransformerBlock(num_heads, self.mlp_dim or 2 * self.embed_dim, dropout)
            for _ in range(self.num_layers)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        if input_shape[1] is not None and input_shape[1] > self.max_length:
            raise ValueError(f"TextTransformerEncoder: sequences of {input_shape[1]} tokens "
                             f"exceed max_length={self.max_length}")
        self.embedding.build(input_shape)
        self.positions = self.add_weight(
            shape=(self.max_length, self.embed_dim), name="positions",
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        token_shape = (*input_shape, self.embed_dim)
        for block in self.blocks:
            block.build(token_shape)
        self.norm.build(token_shape)

    def call(self, token_ids, step_mask=None, training=None):
        check_input(self, token_ids.shape, token_ids.dtype)
        reject_step_mask(self, step_mask)
        mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")
        tokens = self.embedding(token_ids)
        positions = self.positions[: keras.ops.shape(token_ids)[1]]
        tokens = tokens + keras.ops.cast(positions, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, mask, training=training)
        tokens = self.norm(tokens)
        return self.outputs(masked_mean(tokens, mask), tokens, mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "max_length": self.max_length,
        }
