"""The backbone: one encoder per modality and a fusion, from preprocessed features to ``fused``.

Like KerasHub's ``Backbone``, it is a functional ``keras.Model`` built in ``__init__`` from plain
arguments, so ``get_config`` is just those arguments and a saved model is rebuilt exactly.
Inputs are the preprocessor's outputs: one feature tensor per modality and one presence flag
``<modality>_present`` (``[batch, 1]``; 0 = absent). Outputs: ``{"fused": ...}`` plus
``modality_weights`` when the fusion returns them.

Encoders and fusions are chosen by registered name (see :mod:`mmkeras.registry`); each
modality's encoder defaults by what it receives (:data:`DEFAULT_ENCODERS`).

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
from mmkeras.models.preprocessor import PRESENT_SUFFIX
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
            "dtype": ..., "spectral": bool, "vocab_size": int, "augment": {...}}}`` in order;
            ``shape`` is the feature shape after preprocessing, without the batch axis.
        encoders: ``{name: encoder name or {"name": ..., **kwargs}}``; missing ones default.
        fusion: fusion name or ``{"name": ..., **kwargs}``.
        embed_dim: width of every encoder's tokens and of the fused vector.
        modality_dropout: probability of marking a present modality absent while training.
        num_classes: needed by late fusions (their per-modality heads).
        seed: seed of the modality dropout.
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
        fusion_layer = fusion_cls(**{"embed_dim": embed_dim, **fusion_kwargs}, name="fusion")

        inputs: dict[str, keras.KerasTensor] = {}
        for name, m in modalities.items():
            inputs[name] = keras.Input(tuple(m["shape"]), dtype=m.get("dtype", "float32"),
                                       name=name)
        for name in modalities:
            inputs[name + PRESENT_SUFFIX] = keras.Input((1,), name=name + PRESENT_SUFFIX)
        presence = keras.layers.Concatenate(name="presence")(
            [inputs[n + PRESENT_SUFFIX] for n in modalities]
        ) if len(modalities) > 1 else inputs[next(iter(modalities)) + PRESENT_SUFFIX]
        if modality_dropout:
            presence = ModalityDropout(modality_dropout, seed=seed,
                                       name="modality_dropout")(presence)

        features = []
        for name, m in modalities.items():
            x = inputs[name]
            if m.get("augment"):
                x = ImageAugmentation(**m["augment"], name=f"{name}_augmentation")(x)
            early_raw = fusion_cls.level == "early" and m["input_kind"] != "tokens"
            if early_raw:
                features.append({"raw": x})
                continue
            encoder = self._encoder(name, m, encoders.get(name), embed_dim)
            encoded = encoder(x)
            features.append({"raw": encoded["pooled"]} if fusion_cls.level == "early"
                            else encoded)
        outputs = fusion_layer(features, presence)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.modalities = {n: dict(m) for n, m in modalities.items()}
        self.encoders = encoders
        self.fusion = fusion
        self.fusion_level = fusion_cls.level
        self.embed_dim = embed_dim
        self.modality_dropout = modality_dropout
        self.num_classes = num_classes
        self.seed = seed

    @staticmethod
    def _encoder(name: str, modality: dict, spec: str | dict | None, embed_dim: int):
        enc_name, enc_kwargs = split_spec(spec or default_encoder(modality), f"encoder of {name}")
        cls = ENCODERS.get(enc_name)
        kind = modality["input_kind"]
        if cls.input_kinds and kind not in cls.input_kinds:
            raise ValueError(f"encoder {enc_name!r} of modality {name!r} takes "
                             f"{list(cls.input_kinds)} inputs, but {name!r} gives {kind!r}")
        if kind == "tokens":
            enc_kwargs = {"vocab_size": modality["vocab_size"], **enc_kwargs}
        return cls(**{"embed_dim": embed_dim, **enc_kwargs}, name=f"{name}_encoder")

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
        }

    @classmethod
    def from_config(cls, config: dict) -> FusionBackbone:
        return cls(**config)
