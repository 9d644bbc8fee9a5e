"""Tensor Fusion Network: the outer product of the modalities' [1; h] vectors."""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion, where_present
from mmkeras.fusion.common import check_inputs, drop_absent, present_column
from mmkeras.registry import register_fusion

MAX_PRODUCT = 2**16


@register_fusion("tensor")
class TensorFusion(Fusion):
    """Tensor Fusion Network (Zadeh et al., 2017): every unimodal, bimodal, ... interaction.

    Each pooled vector is projected to ``dim`` values ``h_m`` and extended with a constant 1;
    the outer product ``[1; h_1] x [1; h_2] x ...`` (``(dim + 1) ** M`` values) holds the
    unimodal terms, every product of two modalities, of three..., and ``Dense(embed_dim)`` maps
    it to ``fused`` ``[B, embed_dim]``. An absent modality keeps only its constant-1 path (its
    ``h_m`` is exactly 0), so the product reduces to the interactions of the present ones.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 5), "float32")} for _ in range(3)]
        >>> out = TensorFusion(embed_dim=6, dim=2)(features, np.ones((2, 3), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 6)
    """

    level = "intermediate"
    paper = "Zadeh et al., 2017, Tensor Fusion Network for Multimodal Sentiment Analysis"

    def __init__(self, embed_dim: int = 64, dim: int = 8, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        if int(dim) < 1:
            raise ValueError(f"TensorFusion: dim must be >= 1, got {dim}")
        self.dim = int(dim)

    def build(self, features_shape, presence_shape) -> None:
        num_modalities = check_inputs(self, features_shape, presence_shape, ("pooled",))
        size = (self.dim + 1) ** num_modalities
        if size > MAX_PRODUCT:
            raise ValueError(f"TensorFusion: (dim + 1) ** {num_modalities} modalities = {size} "
                             f"products (> {MAX_PRODUCT}); lower dim or use low_rank_tensor")
        self.projections = []
        for m, feature in enumerate(features_shape):
            projection = keras.layers.Dense(self.dim, name=f"projection_{m}")
            projection.build((None, feature["pooled"][-1]))
            self.projections.append(projection)
        self.output_dense = keras.layers.Dense(self.embed_dim, name="output_dense")
        self.output_dense.build((None, size))

    def call(self, features, presence, training=None) -> dict:
        product = None
        for m, feature in enumerate(drop_absent(features, presence)):
            h = where_present(self.projections[m](feature["pooled"]), present_column(presence, m))
            extended = keras.ops.pad(h, [[0, 0], [1, 0]], constant_values=1.0)  # [1; h]
            if product is None:
                product = extended
            else:
                outer = product[:, :, None] * extended[:, None, :]
                product = keras.ops.reshape(outer, (-1, outer.shape[1] * outer.shape[2]))
        return {"fused": self.output_dense(product)}

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim}
