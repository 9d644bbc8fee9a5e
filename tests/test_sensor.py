"""In-graph sensor transforms against numpy."""

import keras
import numpy as np

from mmkeras.data.sensor import AppendDifferences, LogPowerSpectrogram


def test_log_power_spectrogram_matches_numpy(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 1000, 3)).astype(np.float32)
    layer = LogPowerSpectrogram(n_fft=256, hop_length=64)
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (2, 1 + (1000 - 256) // 64, 3 * 129) == layer.compute_output_shape(x.shape)
    window = np.hanning(257)[:-1]  # periodic Hann
    for frame in (0, 5):
        seg = x[1, frame * 64: frame * 64 + 256] * window[:, None]
        expected = 10 * np.log10(np.abs(np.fft.rfft(seg, axis=0)) ** 2).T.reshape(-1)
        np.testing.assert_allclose(out[1, frame], expected, atol=2e-3)
    clone = LogPowerSpectrogram.from_config(layer.get_config())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), out)


def test_append_differences():
    x = np.cumsum(np.random.default_rng(1).normal(size=(4, 8, 2)), axis=1).astype(np.float32)
    out = keras.ops.convert_to_numpy(AppendDifferences()(x))
    np.testing.assert_array_equal(out[..., :2], x)
    np.testing.assert_allclose(out[:, 1:, 2:], np.diff(x, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(out[:, 0, 2:], 0)
