"""Intermediate fusion with a per-example softmax gate over the present modalities."""

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


@register_fusion("gated")
class GatedFusion(Fusion):
    """Gate-weighted sum of the pooled vectors ``[B, D]``, weights returned per example.

    One shared ``Dense(1)`` scores each modality's pooled vector; a softmax over the present
    modalities only turns the scores into ``modality_weights`` (exactly 0 for absent ones), so
    an uninformative modality can be turned down example by example (in the spirit of gated
    multimodal units, Arevalo et al., 2017). The gate has no bias: a bias shared by every
    modality cannot change a softmax.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(2)]
        >>> out = GatedFusion(embed_dim=4)(features, np.array([[1, 1], [0, 1]], "float32"))
        >>> tuple(out["fused"].shape), keras.ops.convert_to_numpy(out["modality_weights"]).tolist()
        ((2, 4), [[0.5, 0.5], [0.0, 1.0]])
    """

    level = "intermediate"
    returns_weights = True
    paper = "Arevalo et al., 2017, Gated Multimodal Units for Information Fusion"

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("pooled",))
        size = pooled_size(self, features_shape)
        self.gate = keras.layers.Dense(1, use_bias=False, name="gate")
        self.gate.build((None, len(features_shape), size))

    def call(self, features, presence, training=None) -> dict:
        pooled = stack_pooled(drop_absent(features, presence))  # [B, M, D]
        weights = masked_softmax(self.gate(pooled)[..., 0], presence)
        return {"fused": weighted_sum(weights, pooled), "modality_weights": weights}
