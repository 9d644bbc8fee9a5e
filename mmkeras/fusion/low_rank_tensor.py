"""Low-rank Multimodal Fusion: the tensor fusion product through rank-r modality factors."""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion, where_present
from mmkeras.fusion.common import check_inputs, drop_absent, present_column
from mmkeras.registry import register_fusion


@register_fusion("low_rank_tensor")
class LowRankTensorFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al., 2018): tensor fusion without the big tensor.

    Each modality has factors ``W_m`` ``[rank, D_m + 1, embed_dim]`` applied to ``[1; h_m]``
    (``h_m`` its pooled vector); the factor outputs are multiplied across modalities and summed
    over the rank with learned weights, plus a bias: ``fused`` ``[B, embed_dim]``. This equals a
    Dense layer on the tensor-fusion outer product whose weight has rank ``rank``, in time
    linear in the number of modalities. An absent modality contributes ``[1; 0]``.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 5), "float32")} for _ in range(3)]
        >>> out = LowRankTensorFusion(embed_dim=6, rank=2)(features, np.ones((2, 3), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 6)
    """

    level = "intermediate"
    paper = "Liu et al., 2018, Efficient Low-rank Multimodal Fusion with Modality-Specific Factors"

    def __init__(self, embed_dim: int = 64, rank: int = 4, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        if int(rank) < 1:
            raise ValueError(f"LowRankTensorFusion: rank must be >= 1, got {rank}")
        self.rank = int(rank)

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("pooled",))
        self.factors = [
            self.add_weight(shape=(self.rank, feature["pooled"][-1] + 1, self.embed_dim),
                            initializer="glorot_normal", name=f"factor_{m}")
            for m, feature in enumerate(features_shape)
        ]
        self.rank_weights = self.add_weight(shape=(self.rank,), initializer="glorot_normal",
                                            name="rank_weights")
        self.bias = self.add_weight(shape=(self.embed_dim,), initializer="zeros", name="bias")

    def call(self, features, presence, training=None) -> dict:
        product = None
        for m, feature in enumerate(drop_absent(features, presence)):
            h = where_present(feature["pooled"], present_column(presence, m))
            extended = keras.ops.pad(h, [[0, 0], [1, 0]], constant_values=1.0)  # [1; h]
            factor = keras.ops.einsum("bi,rio->bro", extended,
                                      keras.ops.cast(self.factors[m], extended.dtype))
            product = factor if product is None else product * factor
        weights = keras.ops.cast(self.rank_weights, product.dtype)
        fused = keras.ops.einsum("bro,r->bo", product, weights)
        return {"fused": fused + keras.ops.cast(self.bias, fused.dtype)}

    def get_config(self) -> dict:
        return {**super().get_config(), "rank": self.rank}
