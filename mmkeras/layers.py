"""Loading saved mmkeras models: importing this module registers every mmkeras layer with Keras.

Example:
    from mmkeras.layers import load_model
    model = load_model("runs/machine-20261123-101500/model.keras")
"""

from __future__ import annotations

from pathlib import Path

import keras

import mmkeras.data.audio  # registers LogMelSpectrogram, Mfcc
import mmkeras.data.image  # registers ImageAugmentation
import mmkeras.data.sensor  # registers LogPowerSpectrogram, AppendDifferences
import mmkeras.data.standardize  # registers Rescale
import mmkeras.models  # noqa: F401  registers encoders, fusions, preprocessor, backbone, task

__all__ = ["load_model"]


def load_model(path: str | Path) -> keras.Model:
    """``keras.saving.load_model`` with every mmkeras layer registered."""
    return keras.saving.load_model(path)
