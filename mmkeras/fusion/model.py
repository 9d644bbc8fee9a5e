"""Build a complete fusion model: raw dict inputs, in-graph preprocessing, encoders, fusion, head.

Example:
    >>> model = build_fusion_model(dataset.modalities, 4, "intermediate", state)  # doctest: +SKIP
    >>> model.predict({"audio": audio, "notes": notes})                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras

from mmkeras.data.dataset import ModalitySpec
from mmkeras.data.image import ImageAugmentation
from mmkeras.data.preprocessing import is_spectral, preprocessing_layers
from mmkeras.encoders import (
    ImageEncoder,
    SpectrogramEncoder,
    SummaryFeatures,
    TextEncoder,
    TimeSeriesEncoder,
)
from mmkeras.fusion.early import EarlyFusion
from mmkeras.fusion.intermediate import IntermediateFusion
from mmkeras.fusion.late import LateFusion
from mmkeras.fusion.modality_dropout import ModalityDropout

SPECTRAL_BANDS = 16


def _encoder(spec: ModalitySpec, state: dict[str, Any], embed_dim: int) -> keras.layers.Layer:
    name = f"{spec.name}_encoder"
    if spec.kind == "text":
        return TextEncoder(len(state["vocabulary"]) + 2, embed_dim, name=name)
    if is_spectral(spec):  # audio, spectral time series
        return SpectrogramEncoder(embed_dim, name=name)
    if spec.kind == "image":  # options["augment"]: ImageAugmentation kwargs, training only
        encoder = ImageEncoder(embed_dim, name=name)
        augment = spec.options.get("augment")
        if not augment:
            return encoder
        layers = [ImageAugmentation(**augment, name=f"{spec.name}_augmentation"), encoder]
        return keras.Sequential(layers, name=f"{spec.name}_augmented_encoder")
    return TimeSeriesEncoder(embed_dim, name=name)


def _early_features(spec: ModalitySpec, state: dict[str, Any], embed_dim: int):
    if spec.kind == "text":  # text has no fixed numeric summary: a jointly learned embedding
        return TextEncoder(len(state["vocabulary"]) + 2, embed_dim, name=f"{spec.name}_features")
    if spec.kind == "image":  # the standardised pixels at half resolution
        pool = [keras.layers.AveragePooling2D(2, padding="same"), keras.layers.Flatten()]
        return keras.Sequential(pool, name=f"{spec.name}_features")
    long_series = (spec.kind == "timeseries" and not is_spectral(spec)
                   and spec.shape[0] >= 4 * SPECTRAL_BANDS)
    bands = SPECTRAL_BANDS if long_series else 0
    return SummaryFeatures(bands=bands, name=f"{spec.name}_features")


def build_fusion_model(
    modalities: dict[str, ModalitySpec],
    num_classes: int,
    fusion: str,
    preprocessing: dict[str, dict[str, Any]],
    embed_dim: int = 64,
    dropout: float = 0.1,
    modality_dropout: float = 0.0,
    name: str = "mmkeras_model",
) -> keras.Model:
    """Functional model taking ``{modality: raw tensor}`` and returning class probabilities.

    ``fusion`` is ``early`` (fixed per-modality summaries concatenated before a shared network),
    ``intermediate`` (learned per-modality encoders, embeddings concatenated, shared head) or
    ``late`` (one classifier per modality, probabilities averaged with learned weights).
    ``modality_dropout`` > 0 drops whole modalities at random while training (early and
    intermediate fusion; see :class:`ModalityDropout`).
    """
    inputs: dict[str, keras.KerasTensor] = {}
    branches = []
    for mod_name, spec in modalities.items():
        x = inputs[mod_name] = keras.Input(spec.shape, dtype=spec.dtype, name=mod_name)
        for layer in preprocessing_layers(spec, preprocessing[mod_name]):
            x = layer(x)
        if fusion == "early":
            branches.append(_early_features(spec, preprocessing[mod_name], embed_dim)(x))
        else:
            branches.append(_encoder(spec, preprocessing[mod_name], embed_dim)(x))

    if fusion == "late":
        probabilities = [
            keras.layers.Dense(num_classes, activation="softmax", name=f"{n}_classifier")(b)
            for n, b in zip(modalities, branches, strict=True)
        ]
        outputs = (LateFusion(name="late_fusion")(probabilities) if len(probabilities) > 1
                   else probabilities[0])
    else:
        if modality_dropout and len(branches) > 1:
            branches = ModalityDropout(modality_dropout, name="modality_dropout")(branches)
        if fusion == "early":
            x = EarlyFusion(name="early_fusion")(branches)
            x = keras.layers.Dense(2 * embed_dim, activation="relu", name="shared_dense")(x)
        elif fusion == "intermediate":
            x = IntermediateFusion("concat", name="intermediate_fusion")(branches)
        else:
            raise ValueError(f"unknown fusion {fusion!r}: use early, intermediate or late")
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        x = keras.layers.Dense(embed_dim, activation="relu", name="head_dense")(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)
