"""Transformer encoder for time series ``[batch, T, C]``: patches of steps as tokens."""

from __future__ import annotations

import math

import keras

from mmkeras.encoders.base import Encoder, downsample_mask, masked_mean
from mmkeras.encoders.inputs import check_input, zero_masked_steps
from mmkeras.encoders.transformer_block import TransformerBlock
from mmkeras.registry import register_encoder


@register_encoder("transformer")
class SequenceTransformerEncoder(Encoder):
    """Patch embedding, learned positions and Transformer blocks over a time series (the
    patching of PatchTST, Nie et al. 2023, with one embedding for all channels).

    The series is cut into non-overlapping patches of ``patch_size`` steps (``None``: the
    smallest size giving at most ``max_tokens`` tokens; the end is zero-padded to a whole patch),
    each embedded by a strided ``Conv1D``, plus a learned position embedding; ``num_layers``
    :class:`TransformerBlock` s follow, then a LayerNorm. The step count must be static.

    - ``mask``: ``step_mask`` carried to patches (a patch is valid when any of its steps is);
      masked steps are zeroed before patching and masked patches are excluded from attention.
    - ``pooled``: masked mean of the tokens.

    Example:
        >>> enc = SequenceTransformerEncoder(embed_dim=8, num_heads=2, num_layers=1)
        >>> out = enc(keras.ops.zeros((2, 1000, 3)))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((2, 63, 8), (2, 8))
    """

    input_kinds = ("sequence",)
    takes_step_mask = True

    def __init__(
        self,
        embed_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.1,
        patch_size: int | None = None,
        max_tokens: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if num_layers < 0 or max_tokens < 1 or (patch_size is not None and patch_size < 1):
            raise ValueError(
                f"SequenceTransformerEncoder: num_layers must be >= 0, max_tokens and patch_size "
                f">= 1; got num_layers={num_layers}, max_tokens={max_tokens}, "
                f"patch_size={patch_size}"
            )
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = None if mlp_dim is None else int(mlp_dim)
        self.dropout = float(dropout)
        self.patch_size = None if patch_size is None else int(patch_size)
        self.max_tokens = int(max_tokens)
        self.blocks = [
            TransformerBlock(num_heads, self.mlp_dim or 2 * self.embed_dim, dropout)
            for _ in range(self.num_layers)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.patch: keras.layers.Conv1D | None = None
        self.stride = 1
        self.length = 1

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        steps = input_shape[1]
        if steps is None:
            raise ValueError("SequenceTransformerEncoder needs a static number of steps, got "
                             f"input shape {tuple(input_shape)}")
        self.stride = self.patch_size or math.ceil(steps / self.max_tokens)
        self.length = math.ceil(steps / self.stride)
        self.patch = keras.layers.Conv1D(self.embed_dim, self.stride, strides=self.stride)
        self.patch.build((input_shape[0], self.length * self.stride, input_shape[2]))
        self.positions = self.add_weight(
            shape=(self.length, self.embed_dim), name="positions",
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        token_shape = (input_shape[0], self.length, self.embed_dim)
        for block in self.blocks:
            block.build(token_shape)
        self.norm.build(token_shape)

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        x = zero_masked_steps(x, step_mask)
        x = keras.ops.pad(x, [[0, 0], [0, self.length * self.stride - x.shape[1]], [0, 0]])
        tokens = self.patch(x) + keras.ops.cast(self.positions, x.dtype)
        if step_mask is None:
            mask = keras.ops.ones(keras.ops.shape(tokens)[:2], dtype="float32")
        else:
            mask = downsample_mask(step_mask, self.stride, self.length)
        for block in self.blocks:
            tokens = block(tokens, mask, training=training)
        tokens = self.norm(tokens)
        return self.outputs(masked_mean(tokens, mask), tokens, mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "patch_size": self.patch_size,
            "max_tokens": self.max_tokens,
        }
