"""The backbone: one encoder per modality and a fusion, from preprocessed features to ``fused``.

Like KerasHub's ``Backbone``, it is a functional ``keras.Model`` built in ``__init__`` from plain
arguments, so ``get_config`` is just those arguments and a saved model is rebuilt exactly.
Inputs are the preprocessor's outputs: one feature tensor per modality, one presence flag
``<modality>_present`` (``[batch, 1]``; 0 = absent) and, for series described with
``"step_mask": True``, a step mask ``<modality>_step_mask`` (``[batch, T]``; 1 = observed step,
0 = imputed) that goes to the encoder as ``step_mask`` when it takes one
(``Encoder.takes_step_mask``; early fusions and other encoders see the imputed values as they
are). Outputs: ``{"fused": ...}`` plus ``modality_weights`` when the fusion returns them.

Encoders and fusions are chosen by registered name (see :mod:`mmkeras.registry`); each
modality's encoder defaults by what it receives (:data:`DEFAULT_ENCODERS`). Encoders are built
with ``return_tokens=fusion.uses_tokens``: under a fusion that reads pooled vectors only they
create no token weights; and with ``return_pooled=fusion.uses_pooled`` (always True for early
fusions, which read a text encoder's pooled vector, and with ``keep_pooled``, for the task's
unimodal heads): under a fusion that reads tokens only they create no pooled weights.

A late fusion's ``unimodal`` argument (``{modality: run folder or model.keras}``, each a model
trained on that modality alone with a late fusion, e.g. ``fusion=late_mean``) makes a stacking
on frozen unimodal models: those modalities' encoders and per-modality heads start from the
saved ones and are frozen, so only the combination (e.g. ``late_stacking``'s Dense) trains.

Example:
    >>> backbone = FusionBackbone(
    ...     {"acc": {"input_kind": "sequence", "shape": [64, 3]},
    ...      "temp": {"input_kind": "sequence", "shape": [8, 1]}},
    ...     fusion={"name": "gated"}, embed_dim=8)
    >>> sorted(backbone.output)
    ['fused', 'modality_weights']
"""

from __future__ import annotations

from typing import Any

import keras

from mmkeras.data.image import ImageAugmentation
from mmkeras.fusion.modality_dropout import ModalityDropout
from mmkeras.models.preprocessor import PRESENT_SUFFIX, STEP_MASK_SUFFIX
from mmkeras.models.unimodal import load_unimodal, merge_encoder_spec
from mmkeras.registry import ENCODERS, FUSIONS, split_spec

# Encoder used when the config names none, by what the encoder receives.
DEFAULT_ENCODERS = {
    "sequence": "conv1d",
    "spectrogram": "spectrogram_cnn",
    "image": "image_cnn",
    "tokens": "text_bag",
    "vector": "mlp",
}


def default_encoder(modality: dict[str, Any]) -> str:
    """The default encoder name for one modality description."""
    if modality["input_kind"] == "sequence" and modality.get("spectral"):
        return DEFAULT_ENCODERS["spectrogram"]
    return DEFAULT_ENCODERS[modality["input_kind"]]


@keras.saving.register_keras_serializable(package="mmkeras")
class FusionBackbone(keras.Model):
    """``{modality: features, <modality>_present: flag}`` -> ``{"fused", ["modality_weights"]}``.

    Args:
        modalities: ``{name: {"input_kind": sequence|image|tokens|vector, "shape": [...],
            "dtype": ..., "spectral": bool, "vocab_size": int, "augment": {...},
            "step_mask": bool}}`` in order; ``shape`` is the feature shape after
            preprocessing, without the batch axis; ``step_mask`` adds the input
            ``<name>_step_mask`` ``[batch, shape[0]]`` (sequences only).
        encoders: ``{name: encoder name or {"name": ..., **kwargs}}``; missing ones default.
        fusion: fusion name or ``{"name": ..., **kwargs}``.
        embed_dim: width of every encoder's tokens and of the fused vector.
        modality_dropout: probability of marking a present modality absent while training.
        num_classes: needed by late fusions (their per-modality heads).
        seed: seed of the modality dropout.
        keep_pooled: the encoders return ``pooled`` even when the fusion does not read it
            (``Fusion.uses_pooled`` False), for the task's unimodal heads.
        load_unimodal_weights: read the weights of a late fusion's ``unimodal`` models
            (``from_config`` passes False: a saved model restores its own weights, and needs no
            such file).
    """

    def __init__(
        self,
        modalities: dict[str, dict[str, Any]],
        encoders: dict[str, str | dict] | None = None,
        fusion: str | dict = "concat",
        embed_dim: int = 64,
        modality_dropout: float = 0.0,
        num_classes: int | None = None,
        seed: int | None = None,
        keep_pooled: bool = False,
        load_unimodal_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - set(modalities))
        if unknown:
            raise ValueError(f"encoders given for unknown modalities {unknown}; "
                             f"modalities: {list(modalities)}")
        fusion_name, fusion_kwargs = split_spec(fusion, "fusion")
        fusion_cls = FUSIONS.get(fusion_name)
        if fusion_cls.level == "late":
            if num_classes is None:
                raise ValueError(f"fusion {fusion_name!r} is a late fusion: give num_classes")
            fusion_kwargs = {"num_classes": num_classes, **fusion_kwargs}
        unimodal = dict(fusion_kwargs.get("unimodal") or {})
        stray = sorted(set(unimodal) - set(modalities))
        if stray:
            raise ValueError(f"fusion {fusion_name!r}: unimodal models given for unknown "
                             f"modalities {stray}; modalities: {list(modalities)}")
        sources = {name: load_unimodal(path, name, num_classes)
                   for name, path in unimodal.items()} if load_unimodal_weights else {}
        for name, source in sources.items():
            encoders[name] = merge_encoder_spec(encoders.get(name), source.encoder, name)
        fusion_layer = fusion_cls(**{"embed_dim": embed_dim, **fusion_kwargs}, name="fusion")
        return_pooled = fusion_cls.uses_pooled or fusion_cls.level == "early" or keep_pooled

        inputs: dict[str, keras.KerasTensor] = {}
        for name, m in modalities.items():
            inputs[name] = keras.Input(tuple(m["shape"]), dtype=m.get("dtype", "float32"),
                                       name=name)
        for name in modalities:
            inputs[name + PRESENT_SUFFIX] = keras.Input((1,), name=name + PRESENT_SUFFIX)
        for name, m in modalities.items():
            if m.get("step_mask"):
                if m["input_kind"] != "sequence":
                    raise ValueError(f"modality {name!r}: step_mask applies to sequences, not "
                                     f"{m['input_kind']!r} inputs")
                inputs[name + STEP_MASK_SUFFIX] = keras.Input(
                    (m["shape"][0],), name=name + STEP_MASK_SUFFIX)
        presence = keras.layers.Concatenate(name="presence")(
            [inputs[n + PRESENT_SUFFIX] for n in modalities]
        ) if len(modalities) > 1 else inputs[next(iter(modalities)) + PRESENT_SUFFIX]
        if modality_dropout:
            presence = ModalityDropout(modality_dropout, seed=seed,
                                       name="modality_dropout")(presence)

        features = []
        built: dict[str, keras.layers.Layer] = {}
        for name, m in modalities.items():
            x = inputs[name]
            if m.get("augment"):
                x = ImageAugmentation(**m["augment"], name=f"{name}_augmentation")(x)
            early_raw = fusion_cls.level == "early" and m["input_kind"] != "tokens"
            if early_raw:
                features.append({"raw": x})
                continue
            encoder = self._encoder(name, m, encoders.get(name), embed_dim,
                                    fusion_cls.uses_tokens, return_pooled)
            step_mask = inputs.get(name + STEP_MASK_SUFFIX) if encoder.takes_step_mask else None
            encoded = encoder(x, step_mask=step_mask)
            built[name] = encoder
            features.append({"raw": encoded["pooled"]} if fusion_cls.level == "early"
                            else encoded)
        outputs = fusion_layer(features, presence)
        order = list(modalities)
        for name in unimodal:  # frozen: only the combination trains
            built[name].trainable = False
            fusion_layer.freeze_head(order.index(name))
        for name, source in sources.items():
            built[name].set_weights(source.encoder_weights)
            fusion_layer.heads[order.index(name)].set_weights(source.head_weights)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if unimodal and not self.trainable_weights:
            raise ValueError(f"fusion {fusion_name!r} with every modality's unimodal model "
                             f"frozen has nothing left to train: use late_stacking or "
                             f"late_weighted, or leave a modality out of 'unimodal'")
        self.modalities = {n: dict(m) for n, m in modalities.items()}
        self.encoders = encoders
        self.fusion = fusion
        self.fusion_level = fusion_cls.level
        self.embed_dim = embed_dim
        self.modality_dropout = modality_dropout
        self.num_classes = num_classes
        self.seed = seed
        self.keep_pooled = bool(keep_pooled)

    @staticmethod
    def _encoder(name: str, modality: dict, spec: str | dict | None, embed_dim: int,
                 return_tokens: bool, return_pooled: bool):
        enc_name, enc_kwargs = split_spec(spec or default_encoder(modality), f"encoder of {name}")
        cls = ENCODERS.get(enc_name)
        kind = modality["input_kind"]
        if cls.input_kinds and kind not in cls.input_kinds:
            raise ValueError(f"encoder {enc_name!r} of modality {name!r} takes "
                             f"{list(cls.input_kinds)} inputs, but {name!r} gives {kind!r}")
        if kind == "tokens":
            enc_kwargs = {"vocab_size": modality["vocab_size"], **enc_kwargs}
        return cls(**{"embed_dim": embed_dim, **enc_kwargs, "return_tokens": return_tokens,
                      "return_pooled": return_pooled}, name=f"{name}_encoder")

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "modalities": self.modalities,
            "encoders": self.encoders,
            "fusion": self.fusion,
            "embed_dim": self.embed_dim,
            "modality_dropout": self.modality_dropout,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "keep_pooled": self.keep_pooled,
        }

    @classmethod
    def from_config(cls, config: dict) -> FusionBackbone:
        # saved before keep_pooled existed: every encoder then returned (and saved) pooled
        return cls(**{"keep_pooled": True, **config}, load_unimodal_weights=False)
