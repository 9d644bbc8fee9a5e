"""Intermediate fusion by attention with a learned query over the present modalities."""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion, masked_softmax
from mmkeras.fusion.common import (
    check_inputs,
    drop_absent,
    pooled_size,
    stack_pooled,
    weighted_sum,
)
from mmkeras.registry import register_fusion


@register_fusion("attention")
class AttentionFusion(Fusion):
    """Attention-weighted sum of the pooled vectors ``[B, D]``, weights returned per example.

    Keys are the pooled vectors projected to ``embed_dim`` (no bias: a bias shared by every
    modality cannot change a softmax); a learned query vector scores them by scaled dot product
    and a softmax over the present modalities gives ``modality_weights`` (exactly 0 for absent
    ones). The values are the pooled vectors themselves (attention-based fusion as in
    Hori et al., 2017, multimodal attention).

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(3)]
        >>> presence = np.array([[1, 1, 1], [0, 1, 0]], "float32")
        >>> out = AttentionFusion(embed_dim=4)(features, presence)
        >>> keras.ops.convert_to_numpy(out["modality_weights"])[1].tolist()
        [0.0, 1.0, 0.0]
    """

    level = "intermediate"
    returns_weights = True
    paper = "Hori et al., 2017, Attention-Based Multimodal Fusion for Video Description"

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("pooled",))
        size = pooled_size(self, features_shape)
        self.key = keras.layers.Dense(self.embed_dim, use_bias=False, name="key")
        self.key.build((None, len(features_shape), size))
        self.query = self.add_weight(shape=(self.embed_dim,), initializer="random_normal",
                                     name="query")

    def call(self, features, presence, training=None) -> dict:
        pooled = stack_pooled(drop_absent(features, presence))  # [B, M, D]
        keys = keras.ops.cast(self.key(pooled), "float32")  # [B, M, E]
        scores = keras.ops.einsum("bme,e->bm", keys, keras.ops.cast(self.query, "float32"))
        weights = masked_softmax(scores / float(self.embed_dim) ** 0.5, presence)
        return {"fused": weighted_sum(weights, pooled), "modality_weights": weights}
