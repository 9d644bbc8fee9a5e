"""Pre-norm Transformer encoder block with a token padding mask (for the Transformer encoders)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class TransformerBlock(keras.layers.Layer):
    """Self-attention and MLP, each behind a LayerNorm and added back (pre-LN Transformer,
    Vaswani et al. 2017 with the normalisation placement of Xiong et al. 2020).

    ``call(tokens, mask)``: ``mask`` ``[B, N]`` (1 = valid) keeps padded tokens out of every
    attention: their values never reach a valid token's output.

    Example:
        >>> block = TransformerBlock(num_heads=2, mlp_dim=16)
        >>> tuple(block(keras.ops.zeros((2, 5, 8)), keras.ops.ones((2, 5))).shape)
        (2, 5, 8)
    """

    def __init__(self, num_heads: int = 4, mlp_dim: int = 128, dropout: float = 0.1,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if num_heads < 1 or mlp_dim < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"TransformerBlock: num_heads and mlp_dim must be >= 1 and dropout in [0, 1); "
                f"got num_heads={num_heads}, mlp_dim={mlp_dim}, dropout={dropout}"
            )
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.norm_attention = keras.layers.LayerNormalization(epsilon=1e-6)
        self.norm_mlp = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention: keras.layers.MultiHeadAttention | None = None
        self.hidden = keras.layers.Dense(self.mlp_dim, activation="gelu")
        self.output_dense: keras.layers.Dense | None = None
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, tokens_shape: tuple, mask_shape: tuple | None = None) -> None:
        dim = tokens_shape[-1]
        if dim is None or dim % self.num_heads:
            raise ValueError(
                f"TransformerBlock: the token size ({dim}) must be static and divisible by "
                f"num_heads ({self.num_heads})"
            )
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, dim // self.num_heads, dropout=self.dropout
        )
        self.attention.build(tokens_shape, tokens_shape)
        self.norm_attention.build(tokens_shape)
        self.norm_mlp.build(tokens_shape)
        self.hidden.build(tokens_shape)
        self.output_dense = keras.layers.Dense(dim)
        self.output_dense.build((*tokens_shape[:-1], self.mlp_dim))

    def call(self, tokens, mask, training=None):
        # Every query attends to the valid keys only (padded queries too, so none is empty).
        valid = keras.ops.cast(mask, "float32") > 0
        queries = keras.ops.ones_like(valid)
        attention_mask = keras.ops.logical_and(queries[:, :, None], valid[:, None, :])
        h = self.norm_attention(tokens)
        h = self.attention(h, h, attention_mask=attention_mask, training=training)
        tokens = tokens + self.drop(h, training=training)
        h = self.output_dense(self.hidden(self.norm_mlp(tokens)))
        return tokens + self.drop(h, training=training)

    def compute_output_shape(self, tokens_shape: tuple, mask_shape: tuple | None = None) -> tuple:
        return tuple(tokens_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
        }
