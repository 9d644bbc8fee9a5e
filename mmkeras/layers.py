"""Every serialisable mmkeras layer in one namespace; importing it registers them with Keras.

Example:
    >>> from mmkeras.layers import load_model
    >>> model = load_model("runs/machine-20261123-101500/model.keras")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import keras

from mmkeras.data.audio import LogMelSpectrogram, Mfcc
from mmkeras.data.image import ImageAugmentation
from mmkeras.data.standardize import Rescale
from mmkeras.encoders import (
    ImageEncoder,
    SpectrogramEncoder,
    SummaryFeatures,
    TextEncoder,
    TimeSeriesEncoder,
)
from mmkeras.fusion import EarlyFusion, IntermediateFusion, LateFusion

__all__ = [
    "EarlyFusion",
    "ImageAugmentation",
    "ImageEncoder",
    "IntermediateFusion",
    "LateFusion",
    "LogMelSpectrogram",
    "Mfcc",
    "Rescale",
    "SpectrogramEncoder",
    "SummaryFeatures",
    "TextEncoder",
    "TimeSeriesEncoder",
    "load_model",
]


def load_model(path: str | Path) -> keras.Model:
    """``keras.saving.load_model`` with every mmkeras layer registered."""
    return keras.saving.load_model(path)
