"""Intermediate fusion by concatenation, a learned missing-embedding for absent modalities."""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion
from mmkeras.fusion.common import (
    add_missing_embeddings,
    check_inputs,
    drop_absent,
    fill_missing,
    present_column,
)
from mmkeras.registry import register_fusion


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Concatenate the modalities' pooled vectors: ``[B, sum D_m]``.

    An absent modality's block is a learned vector of its own (one per modality), so the next
    layer can tell "absent" from any real embedding. The classic baseline of intermediate fusion
    (e.g. Ngiam et al., 2011, multimodal deep learning).

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")},
        ...             {"pooled": np.ones((2, 3), "float32")}]
        >>> out = ConcatFusion(embed_dim=4)(features, np.array([[1, 1], [1, 0]], "float32"))
        >>> tuple(out["fused"].shape), keras.ops.convert_to_numpy(out["fused"])[1, 4:].tolist()
        ((2, 7), [0.0, 0.0, 0.0])
    """

    level = "intermediate"
    paper = "Ngiam et al., 2011, Multimodal Deep Learning"

    def build(self, features_shape, presence_shape) -> None:
        check_inputs(self, features_shape, presence_shape, ("pooled",))
        self.missing = add_missing_embeddings(self, [f["pooled"][-1] for f in features_shape])

    def call(self, features, presence, training=None) -> dict:
        features = drop_absent(features, presence)
        blocks = [fill_missing(f["pooled"], present_column(presence, m), self.missing[m])
                  for m, f in enumerate(features)]
        return {"fused": keras.ops.concatenate(blocks, axis=-1)}
