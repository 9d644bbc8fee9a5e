"""Fixed (non-trainable) summary features of a sequence, the inputs of early fusion."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class SummaryFeatures(keras.layers.Layer):
    """Per-channel mean and standard deviation over time, plus log spectral band energies.

    For ``[batch, T, C]`` input the output is ``[batch, C * (2 + bands)]``: mean and std of each
    channel, and (``bands > 0``) the log mean power of the channel's FFT in ``bands`` equal-width
    frequency bands. Nothing is learned, so early fusion sees the raw evidence of every modality
    side by side before its shared network.

    Example:
        >>> tuple(SummaryFeatures(bands=4)(keras.ops.ones((2, 100, 3))).shape)
        (2, 18)
    """

    def __init__(self, bands: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.bands = bands

    def call(self, x):
        ops = keras.ops
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=1)
        std = ops.std(x, axis=1)
        parts = [mean, std]
        if self.bands:
            length = x.shape[1]
            centred = ops.transpose(x - mean[:, None, :], (0, 2, 1))  # [B, C, T]
            real, imag = ops.rfft(centred)
            power = (real**2 + imag**2)[..., 1:]  # drop DC
            width = (length // 2) // self.bands
            power = power[..., : width * self.bands]
            banded = ops.reshape(power, (-1, x.shape[2], self.bands, width))
            log_energy = ops.log(ops.mean(banded, axis=-1) + 1e-6)
            parts.append(ops.reshape(log_energy, (-1, x.shape[2] * self.bands)))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[2] * (2 + self.bands))

    def get_config(self) -> dict:
        return {**super().get_config(), "bands": self.bands}
