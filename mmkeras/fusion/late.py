"""Late fusion: one classifier head per modality, their class probabilities combined.

Four combinations share :class:`LateFusion` (the per-modality heads): ``late_mean``,
``late_weighted``, ``late_product`` and ``late_stacking``. ``fused`` is the combined class
probabilities ``[B, num_classes]`` (float32, rows sum to 1): the task adds no head of its own.

Trained jointly by default. ``unimodal={modality: run folder}`` stacks on frozen unimodal models
instead: :class:`~mmkeras.models.backbone.FusionBackbone` loads each named modality's encoder and
head from a run trained on that modality alone (``modalities=[m] fusion=late_mean``) and freezes
them (:meth:`LateFusion.freeze_head`), so e.g. ``late_stacking`` trains its stacking Dense only::

    fusion: {name: late_stacking, unimodal: {vibration: runs/vib, environment: runs/env}}
"""

from __future__ import annotations

import keras

from mmkeras.fusion.base import Fusion, masked_softmax, where_present
from mmkeras.fusion.common import check_inputs, drop_absent, present_column, weighted_sum
from mmkeras.registry import register_fusion


class LateFusion(Fusion):
    """Base of the late fusions: ``Dense(num_classes)`` on each modality's pooled vector.

    Subclasses implement ``combine(logits [B, M, K] float32, presence) -> dict``; absent
    modalities' logits are there (computed from zeros) and must be excluded.

    ``unimodal``: ``{modality: run folder or model.keras}`` of trained single-modality models
    whose encoders and heads the backbone loads and freezes (kept in the config as the record of
    where they came from; the layer itself only freezes heads, see :meth:`freeze_head`).
    """

    level = "late"

    def __init__(self, num_classes: int, embed_dim: int = 64,
                 unimodal: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.unimodal = {str(k): str(v) for k, v in (unimodal or {}).items()}

    def build(self, features_shape, presence_shape) -> None:
        self.num_modalities = check_inputs(self, features_shape, presence_shape, ("pooled",))
        self.heads = []
        for m, feature in enumerate(features_shape):
            head = keras.layers.Dense(self.num_classes, name=f"head_{m}")
            head.build((None, feature["pooled"][-1]))
            self.heads.append(head)

    def freeze_head(self, index: int) -> None:
        """Stop training modality ``index``'s head (the layer must be built)."""
        if not self.built or not 0 <= index < len(self.heads):
            raise ValueError(f"{type(self).__name__}.freeze_head({index}): build the layer "
                             f"first; it has {len(getattr(self, 'heads', []))} heads")
        self.heads[index].trainable = False

    def call(self, features, presence, training=None) -> dict:
        features = drop_absent(features, presence)
        logits = keras.ops.stack([keras.ops.cast(head(f["pooled"]), "float32")
                                  for head, f in zip(self.heads, features, strict=True)], axis=1)
        return self.combine(logits, presence)

    def combine(self, logits, presence) -> dict:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "unimodal": dict(self.unimodal)}


def _uniform_over_present(presence):
    return masked_softmax(keras.ops.zeros_like(presence, dtype="float32"), presence)


@register_fusion("late_mean")
class LateMeanFusion(LateFusion):
    """Mean of the per-modality class probabilities over the present modalities.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(2)]
        >>> out = LateMeanFusion(num_classes=3)(features, np.array([[1, 1], [0, 1]], "float32"))
        >>> tuple(out["fused"].shape), keras.ops.convert_to_numpy(out["fused"]).sum(1).round(5)
        ((2, 3), array([1., 1.], dtype=float32))
    """

    paper = "late fusion by averaging (e.g. Snoek et al., 2005, early versus late fusion)"

    def combine(self, logits, presence) -> dict:
        probabilities = keras.ops.softmax(logits, axis=-1)
        return {"fused": weighted_sum(_uniform_over_present(presence), probabilities)}


@register_fusion("late_weighted")
class LateWeightedFusion(LateFusion):
    """Weighted mean of the probabilities, one learned weight per modality.

    The weights are a softmax of one trainable logit per modality (equal at first) restricted
    to the present modalities, returned as ``modality_weights``: a trained model says how much
    it trusts each modality.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(2)]
        >>> out = LateWeightedFusion(num_classes=3)(features, np.array([[1, 1], [0, 1]], "float32"))
        >>> keras.ops.convert_to_numpy(out["modality_weights"]).tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """

    returns_weights = True
    paper = "weighted late fusion (e.g. Snoek et al., 2005, early versus late fusion)"

    def build(self, features_shape, presence_shape) -> None:
        super().build(features_shape, presence_shape)
        self.modality_logits = self.add_weight(shape=(self.num_modalities,),
                                               initializer="zeros", name="modality_logits")

    def combine(self, logits, presence) -> dict:
        scores = keras.ops.cast(self.modality_logits, "float32")[None, :]
        weights = masked_softmax(keras.ops.zeros_like(presence, dtype="float32") + scores,
                                 presence)
        probabilities = keras.ops.softmax(logits, axis=-1)
        return {"fused": weighted_sum(weights, probabilities), "modality_weights": weights}


@register_fusion("late_product")
class LateProductFusion(LateFusion):
    """Product of experts (Hinton, 2002): sum of log-probabilities of the present modalities.

    ``fused = softmax(sum_m log p_m)``: each present modality can veto a class, and confident
    modalities dominate. No modality present gives the uniform distribution.

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(2)]
        >>> out = LateProductFusion(num_classes=3)(features, np.ones((2, 2), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 3)
    """

    paper = "Hinton, 2002, Training Products of Experts by Minimizing Contrastive Divergence"

    def combine(self, logits, presence) -> dict:
        log_probabilities = keras.ops.log_softmax(logits, axis=-1)
        kept = [where_present(log_probabilities[:, m], present_column(presence, m))
                for m in range(log_probabilities.shape[1])]
        return {"fused": keras.ops.softmax(sum(kept), axis=-1)}


@register_fusion("late_stacking")
class LateStackingFusion(LateFusion):
    """Stacking (Wolpert, 1992): a learned head on all the per-modality predictions.

    Input of the stacking ``Dense(num_classes)``: every modality's log-probabilities (exactly 0
    for an absent modality) and the presence flags, so it learns how to combine the modalities
    and how to do without each. Its kernel starts as one identity block per modality, so the
    untrained layer is the product of experts (``late_product``) and training learns per-class
    trust from there. ``stack_on="probabilities"`` stacks on probabilities from a random
    kernel instead (Wolpert's form); small inputs then need large weights, and it trained
    poorly end to end (benchmarks/RESULTS.md, avdigits grid).

    Example:
        >>> import numpy as np
        >>> features = [{"pooled": np.ones((2, 4), "float32")} for _ in range(2)]
        >>> presence = np.ones((2, 2), "float32")
        >>> stacked = LateStackingFusion(num_classes=3)
        >>> out = stacked(features, presence)
        >>> product = LateProductFusion(num_classes=3)
        >>> _ = product(features, presence)
        >>> product.set_weights(stacked.get_weights()[:4])  # the same per-modality heads
        >>> bool(np.allclose(out["fused"], product(features, presence)["fused"], atol=1e-6))
        True
    """

    paper = "Wolpert, 1992, Stacked Generalization"
    STACK_ON = ("log_probabilities", "probabilities")

    def __init__(self, num_classes: int, embed_dim: int = 64,
                 unimodal: dict[str, str] | None = None,
                 stack_on: str = "log_probabilities", **kwargs) -> None:
        super().__init__(num_classes, embed_dim=embed_dim, unimodal=unimodal, **kwargs)
        if stack_on not in self.STACK_ON:
            raise ValueError(f"LateStackingFusion: stack_on must be one of {self.STACK_ON}, "
                             f"got {stack_on!r}")
        self.stack_on = stack_on

    def build(self, features_shape, presence_shape) -> None:
        super().build(features_shape, presence_shape)
        self.stacking = keras.layers.Dense(self.num_classes, name="stacking")
        self.stacking.build((None, self.num_modalities * (self.num_classes + 1)))
        if self.stack_on == "log_probabilities":
            eye = keras.ops.eye(self.num_classes, dtype=self.stacking.kernel.dtype)
            self.stacking.kernel.assign(keras.ops.concatenate(
                [eye] * self.num_modalities
                + [keras.ops.zeros((self.num_modalities, self.num_classes), eye.dtype)], axis=0))

    def combine(self, logits, presence) -> dict:
        if self.stack_on == "log_probabilities":
            scores = keras.ops.log_softmax(logits, axis=-1)
        else:
            scores = keras.ops.softmax(logits, axis=-1)
        blocks = [where_present(scores[:, m], present_column(presence, m))
                  for m in range(self.num_modalities)]
        stacked = keras.ops.concatenate([*blocks, keras.ops.cast(presence, "float32")], axis=-1)
        fused = keras.ops.cast(self.stacking(stacked), "float32")
        return {"fused": keras.ops.softmax(fused, axis=-1)}

    def get_config(self) -> dict:
        return {**super().get_config(), "stack_on": self.stack_on}

    @classmethod
    def from_config(cls, config: dict) -> LateStackingFusion:
        # Saved before stack_on existed: those layers stacked on probabilities.
        return super().from_config({"stack_on": "probabilities", **config})
