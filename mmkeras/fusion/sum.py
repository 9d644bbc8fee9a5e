"""Intermediate fusion by summing the present modalities' pooled vectors."""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion
from mmkeras.fusion.common import check_inputs, drop_absent, pooled_size, stack_pooled
from mmkeras.registry import register_fusion


@register_fusion("sum")
class SumFusion(Fusion):
    """Sum of the pooled vectors ``[B, D]`` over the present modalities (absent ones add 0).

    Needs one pooled size ``D`` for all modalities. No parameters: the encoders learn to write
    into one shared embedding space.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(3)]
        >>> out = SumFusion(embed_dim=4)(features, np.array([[1, 1, 1], [1, 0, 0]], "float32"))
        >>> keras.ops.convert_to_numpy(out["fused"])[:, 0].tolist()
        [3.0, 1.0]
    """

    level = "intermediate"
    paper = "sum of embeddings (e.g. Baltrusaitis et al., 2019, survey)"

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("pooled",))
        pooled_size(self, features_shape)

    def call(self, features, presence, training=None) -> dict:
        return {"fused": keras.ops.sum(stack_pooled(drop_absent(features, presence)), axis=1)}
