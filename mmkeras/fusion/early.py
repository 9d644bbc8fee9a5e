"""Early fusion: fixed summaries of every modality's input, side by side, one shared network."""

from __future__ import annotations

import keras

from mmkeras.encoders.summary import SummaryFeatures
from mmkeras.fusion.base import Fusion
from mmkeras.fusion.common import (
    add_missing_embeddings,
    check_inputs,
    drop_absent,
    fill_missing,
    present_column,
)
from mmkeras.registry import register_fusion


@register_fusion("early")
class EarlyFusion(Fusion):
    """Early fusion of fixed per-modality summaries (Snoek et al., 2005).

    Each modality's standardised input (``{"raw": x}``) becomes a fixed feature vector:
    a series ``[B, T, C]`` its per-channel mean and std (plus the log energies of ``bands``
    frequency bands when ``T >= 4 * bands``, see :class:`SummaryFeatures`), an image
    ``[B, H, W, C]`` its pixels average-pooled by 2 and flattened, a vector ``[B, F]`` itself.
    An absent modality's block is a learned missing-embedding of its own. The blocks are
    concatenated, batch-normalised (one scale for means, energies and pixels) and mapped by a
    shared ``Dense(2 * embed_dim, relu)``: ``fused`` ``[B, 2 * embed_dim]``.

    Example:
        >>> import numpy as np
        >>> features = [{"raw": np.ones((2, 64, 3), "float32")},
        ...             {"raw": np.ones((2, 8, 8, 1), "float32")},
        ...             {"raw": np.ones((2, 5), "float32")}]
        >>> out = EarlyFusion(embed_dim=4, bands=16)(features, np.ones((2, 3), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 8)
    """

    level = "early"
    paper = "Snoek et al., 2005, Early versus Late Fusion in Semantic Video Analysis"

    def __init__(self, embed_dim: int = 64, bands: int = 16, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        if int(bands) < 0:
            raise ValueError(f"EarlyFusion: bands must be >= 0, got {bands}")
        self.bands = int(bands)

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("raw",))
        self.summaries, sizes = [], []
        for m, feature in enumerate(features_shape):
            shape = tuple(feature["raw"])
            if len(shape) == 3:  # series [B, T, C]
                bands = self.bands if self.bands and shape[1] >= 4 * self.bands else 0
                summary = SummaryFeatures(bands=bands, dtype="float32", name=f"summary_{m}")
            elif len(shape) == 4:  # image [B, H, W, C]
                summary = keras.Sequential([keras.layers.AveragePooling2D(2, padding="same"),
                                            keras.layers.Flatten()], name=f"summary_{m}")
            elif len(shape) == 2:  # vector [B, F]
                summary = None
            else:
                raise ValueError(f"EarlyFusion: features[{m}]['raw'] must be a series [B, T, C], "
                                 f"an image [B, H, W, C] or a vector [B, F], got {shape}")
            if summary is not None:
                summary.build(shape)
                shape = summary.compute_output_shape(shape)
            self.summaries.append(summary)
            sizes.append(shape[-1])
        self.missing = add_missing_embeddings(self, sizes)
        self.norm = keras.layers.BatchNormalization(name="norm")
        self.norm.build((None, sum(sizes)))
        self.dense = keras.layers.Dense(2 * self.embed_dim, activation="relu", name="dense")
        self.dense.build((None, sum(sizes)))

    def call(self, features, presence, training=None) -> dict:
        blocks = []
        for m, feature in enumerate(drop_absent(features, presence)):
            x = feature["raw"]
            block = x if self.summaries[m] is None else self.summaries[m](x)
            block = keras.ops.cast(block, self.compute_dtype)
            blocks.append(fill_missing(block, present_column(presence, m), self.missing[m]))
        fused = self.norm(keras.ops.concatenate(blocks, axis=-1), training=training)
        return {"fused": self.dense(fused)}

    def get_config(self) -> dict:
        return {**super().get_config(), "bands": self.bands}
