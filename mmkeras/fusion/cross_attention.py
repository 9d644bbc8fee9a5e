"""Cross-modal attention (MulT style): each modality's tokens attend to the other modalities'."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import masked_mean
from mmkeras.fusion.base import Fusion, masked_softmax
from mmkeras.fusion.common import check_inputs, drop_absent, weighted_sum
from mmkeras.registry import register_fusion


@register_fusion("cross_attention")
class CrossAttentionFusion(Fusion):
    """Cross-modal attention in the style of MulT (Tsai et al., 2019).

    Every modality's tokens are projected to ``embed_dim``; modality ``i``'s tokens then attend
    (``keras.layers.MultiHeadAttention``, ``num_heads`` heads, one block per modality) to the
    concatenated tokens of the other modalities, with a residual connection. A key takes part
    when its token is valid (``mask``) and its modality is present in the example; padded
    tokens and absent modalities never do. Each modality's attended tokens are masked-mean
    pooled and ``fused`` ``[B, embed_dim]`` is the mean over the present modalities (absent
    ones excluded, so no missing-embedding is needed). When an example has no valid key for
    modality ``i`` (the others absent), its cross-modal term is exactly 0: modality ``i``'s
    output is its own projected tokens, pooled.

    Example:
        >>> import numpy as np
        >>> features = [{"tokens": np.ones((2, n, 4), "float32"),
        ...              "mask": np.ones((2, n), "float32"),
        ...              "pooled": np.ones((2, 4), "float32")} for n in (3, 5)]
        >>> fusion = CrossAttentionFusion(embed_dim=8, num_heads=2)
        >>> out = fusion(features, np.ones((2, 2), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 8)
    """

    level = "intermediate"
    uses_tokens = True
    uses_pooled = False
    paper = "Tsai et al., 2019, Multimodal Transformer for Unaligned Multimodal Language Sequences"

    def __init__(self, embed_dim: int = 64, num_heads: int = 4, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        if int(num_heads) < 1:
            raise ValueError(f"CrossAttentionFusion: num_heads must be >= 1, got {num_heads}")
        self.num_heads = int(num_heads)

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("tokens", "mask"))
        key_dim = max(1, self.embed_dim // self.num_heads)
        total = sum(feature["tokens"][1] for feature in features_shape)
        self.projections, self.attentions = [], []
        for m, feature in enumerate(features_shape):
            projection = keras.layers.Dense(self.embed_dim, name=f"projection_{m}")
            projection.build((None, feature["tokens"][1], feature["tokens"][-1]))
            attention = keras.layers.MultiHeadAttention(self.num_heads, key_dim,
                                                        name=f"attention_{m}")
            query = (None, feature["tokens"][1], self.embed_dim)
            attention.build(query, (None, total - feature["tokens"][1], self.embed_dim))
            self.projections.append(projection)
            self.attentions.append(attention)

    def call(self, features, presence, training=None) -> dict:
        ops = keras.ops
        tokens, valid = [], []
        for m, feature in enumerate(drop_absent(features, presence)):
            mask = ops.cast(feature["mask"], "float32") > 0  # all False where m is absent
            tokens.append(self.projections[m](ops.where(mask[..., None], feature["tokens"], 0)))
            valid.append(mask)
        pooled = []
        for i in range(len(tokens)):
            attended = tokens[i]
            others = [j for j in range(len(tokens)) if j != i]
            if others:
                keys = ops.concatenate([tokens[j] for j in others], axis=1)
                key_valid = ops.concatenate([valid[j] for j in others], axis=1)  # [B, S]
                has_keys = ops.any(key_valid, axis=1)
                # An example without keys attends to the (constant) padding, and the result
                # is dropped: no softmax over zero keys.
                usable = ops.logical_or(key_valid, ops.logical_not(has_keys)[:, None])
                attention_mask = ops.broadcast_to(
                    usable[:, None, :], (ops.shape(usable)[0], attended.shape[1], keys.shape[1]))
                cross = self.attentions[i](attended, keys, attention_mask=attention_mask,
                                           training=training)
                attended = attended + ops.where(has_keys[:, None, None], cross, 0)
            pooled.append(masked_mean(attended, valid[i]))
        weights = masked_softmax(ops.zeros_like(presence, dtype="float32"), presence)
        return {"fused": weighted_sum(weights, ops.stack(pooled, axis=1))}

    def get_config(self) -> dict:
        return {**super().get_config(), "num_heads": self.num_heads}
