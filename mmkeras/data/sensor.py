"""In-graph transforms of multichannel sensor time series ``[batch, T, C]``.

:class:`LogPowerSpectrogram` for fast signals whose evidence is spectral (vibration), and
:class:`AppendDifferences` for slow ones whose evidence is a trend (temperature).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mmkeras")
class LogPowerSpectrogram(keras.layers.Layer):
    """``[batch, T, C]`` signal to ``[batch, frames, C * (n_fft // 2 + 1)]`` log power (dB).

    Short-time Fourier transform of every channel with a periodic Hann window, no padding
    (``frames = 1 + (T - n_fft) // hop_length``), power ``|X|^2`` in ``10 log10(max(p, amin))``
    dB; the channels' spectra are concatenated per frame. Condition-monitoring evidence is
    spectral (a peak at the rotation frequency, energy in a resonance band), and in this form it
    sits in fixed feature positions whatever the machine. Core TF ops only.

    Example:
        >>> LogPowerSpectrogram(n_fft=128, hop_length=64)(np.zeros((2, 1000, 3))).shape
        TensorShape([2, 14, 195])
    """

    def __init__(self, n_fft: int = 128, hop_length: int = 64, amin: float = 1e-10, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.amin = amin

    def call(self, x):
        x = tf.transpose(tf.cast(x, tf.float32), (0, 2, 1))  # [B, C, T]
        stft = tf.signal.stft(x, self.n_fft, self.hop_length, self.n_fft,
                              window_fn=tf.signal.hann_window)  # periodic Hann
        power = tf.math.real(stft) ** 2 + tf.math.imag(stft) ** 2  # [B, C, F, bins]
        db = 10.0 * tf.math.log(tf.maximum(power, self.amin)) / np.log(10.0)
        db = tf.transpose(db, (0, 2, 1, 3))  # [B, F, C, bins]
        shape = tf.shape(db)
        channels, bins = x.shape[1], self.n_fft // 2 + 1
        return tf.reshape(db, (shape[0], shape[1], channels * bins))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        length = input_shape[1]
        frames = None if length is None else 1 + (length - self.n_fft) // self.hop_length
        return (input_shape[0], frames, input_shape[2] * (self.n_fft // 2 + 1))

    def get_config(self) -> dict:
        return {**super().get_config(), "n_fft": self.n_fft, "hop_length": self.hop_length,
                "amin": self.amin}


@keras.saving.register_keras_serializable(package="mmkeras")
class AppendDifferences(keras.layers.Layer):
    """Append first differences ``x[t] - x[t-1]`` (0 at ``t = 0``) as extra channels.

    ``[batch, T, C]`` to ``[batch, T, 2C]``. A trend (a temperature rising by 0.2 °C/s) becomes
    a level the encoder sees directly, separate from the absolute value, which across machines
    mostly reflects where they stand.

    Example:
        >>> AppendDifferences()(np.array([[[1.0], [3.0], [6.0]]])).numpy()[0, :, 1].tolist()
        [0.0, 2.0, 3.0]
    """

    def call(self, x):
        x = tf.cast(x, self.compute_dtype)
        return tf.concat([x, tf.concat([tf.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)], -1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], 2 * input_shape[-1])
