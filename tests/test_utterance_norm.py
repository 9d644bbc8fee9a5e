"""Per-utterance normalisation of the spectrogram encoder (``utterance_norm``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mmkeras.config import resolve_config
from mmkeras.encoders.spectrogram import SpectrogramEncoder
from mmkeras.models.backbone import FusionBackbone

FRAMES, BANDS = 32, 12


def _encoder(norm: str | None) -> SpectrogramEncoder:
    keras.utils.set_random_seed(0)
    return SpectrogramEncoder(embed_dim=8, filters=(4, 8), kernel_size=3, utterance_norm=norm)


def _pooled(encoder: SpectrogramEncoder, x: np.ndarray, step_mask=None) -> np.ndarray:
    return keras.ops.convert_to_numpy(encoder(x, step_mask=step_mask, training=False)["pooled"])


def _logmel(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, FRAMES, BANDS)).astype("float32")


def test_mean_removes_a_per_band_offset_and_nothing_else():
    x = _logmel()
    offset = np.random.default_rng(1).normal(0, 3, size=(3, 1, BANDS)).astype("float32")
    plain, normed = _encoder(None), _encoder("mean")
    assert not np.allclose(_pooled(plain, x), _pooled(plain, x + offset), atol=1e-3)
    np.testing.assert_allclose(_pooled(normed, x + offset), _pooled(normed, x), atol=1e-5)
    # a change over time within a band is not removed
    bump = np.zeros_like(x)
    bump[:, : FRAMES // 2] = 2.0
    assert not np.allclose(_pooled(normed, x + bump), _pooled(normed, x), atol=1e-3)


def test_mean_std_removes_a_per_band_affine_change():
    x = _logmel()
    rng = np.random.default_rng(2)
    scale = rng.uniform(0.5, 3.0, size=(3, 1, BANDS)).astype("float32")
    offset = rng.normal(0, 3, size=(3, 1, BANDS)).astype("float32")
    normed = _encoder("mean_std")
    np.testing.assert_allclose(_pooled(normed, x * scale + offset), _pooled(normed, x),
                               atol=1e-4)
    # the mean alone does not undo a scale
    mean_only = _encoder("mean")
    assert not np.allclose(_pooled(mean_only, x * scale), _pooled(mean_only, x), atol=1e-3)


def test_statistics_use_only_observed_frames():
    x = _logmel()
    mask = np.ones((3, FRAMES), "float32")
    mask[:, 20:] = 0.0
    shifted = x.copy()
    shifted[:, :20] += np.arange(BANDS, dtype="float32")  # offset on the observed frames
    shifted[:, 20:] = 50.0  # whatever sits at masked frames
    normed = _encoder("mean")
    np.testing.assert_allclose(_pooled(normed, shifted, mask), _pooled(normed, x, mask),
                               atol=1e-5)


def test_config_round_trip_and_validation():
    encoder = _encoder("mean_std")
    clone = SpectrogramEncoder.from_config(encoder.get_config())
    assert clone.utterance_norm == "mean_std"
    with pytest.raises(ValueError, match="utterance_norm must be one of"):
        SpectrogramEncoder(utterance_norm="cmn")


def test_reaches_the_encoder_from_config():
    cfg = resolve_config(None, [
        "dataset=avdigits",
        "encoders={audio: {name: spectrogram_cnn, utterance_norm: mean}}",
    ])
    backbone = FusionBackbone(
        {"audio": {"input_kind": "sequence", "spectral": True, "shape": [FRAMES, BANDS]}},
        encoders=cfg.to_dict()["encoders"], embed_dim=8)
    assert backbone.get_layer("audio_encoder").utterance_norm == "mean"
    rebuilt = FusionBackbone.from_config(backbone.get_config())
    assert rebuilt.get_layer("audio_encoder").utterance_norm == "mean"
