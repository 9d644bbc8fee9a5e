"""Convolutional encoder for standardised spectrograms ``[batch, frames, bands]``."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder, downsample_mask, masked_mean
from mmkeras.encoders.inputs import check_input, masked_max, zero_masked_steps
from mmkeras.registry import register_encoder

UTTERANCE_NORMS = (None, "mean", "mean_std")


@register_encoder("spectrogram_cnn")
class SpectrogramEncoder(Encoder):
    """1-D convolutions over time with the frequency bands as channels (the time-convolution
    design of Choi et al. 2016 / SampleCNN-style audio taggers on mel frames).

    Treating mel bands as channels keeps *which* frequencies are active visible to every filter
    (2-D convolutions followed by global pooling average that away: on avdigits audio they stayed
    at chance, 0.10 validation accuracy after 8 epochs, against 0.6 for this encoder). Each block
    is convolution, batch normalisation and max-pooling by 2 over time.

    - ``tokens``: the frames of the last feature map (time pooled ``2 ** len(filters)``-fold),
      each projected (linearly) to ``embed_dim``;
    - ``mask``: ``step_mask`` over frames carried to token resolution; masked frames are zeroed
      before the convolutions, so their values never reach any output;
    - ``pooled`` (documented alternative to the mean of tokens): ``relu(Dense)`` of the masked
      average and masked maximum over time of the last feature map; with ``input_stats``, also
      of the masked mean and standard deviation over time of each input band (the clip's
      band levels, which the convolutions, batch normalisation and pooling only pass on
      indirectly); with ``spectral_peaks``, also of that many peak detectors run along the
      frequency axis of the band levels; with ``spectral_max``, also of each channel's largest
      band level.

    ``spectral_peaks`` (0: off) convolves each clip's band levels along frequency (two
    convolutions of ``spectral_peaks`` filters, width 5) and keeps each filter's maximum over
    frequency: a peak is found wherever it sits, as when a machine's rotation frequency, and so
    its 1x vibration line, differs from machine to machine. The features must be ``channels``
    spectra side by side (a multichannel :class:`~mmkeras.data.sensor.LogPowerSpectrogram`) and
    keep their spectral shape, so standardise them per channel, not per bin (the spectrogram
    option ``standardize: channel``). ``filters=()`` leaves out the convolutions over time, so
    ``pooled`` sees the frames' masked average and maximum, the peaks and the band levels alone,
    and ``tokens`` are the frames: on the machine vibration, where the evidence is one spectral
    line, this smaller encoder overfits less (``benchmarks/RESULTS.md``).

    ``spectral_max`` adds, per channel, the maximum over frequency of the clip's band levels:
    the level of the strongest spectral line, wherever it sits, with no weights to learn (a
    channel's maximum moves by exactly the change of its line, where a learned detector only
    approximates it). On the machine vibration that line is the 1x rotation and its level
    separates imbalance from the other conditions. Like ``spectral_peaks``, it needs
    ``channels`` spectra side by side, standardised per channel.

    ``utterance_norm`` normalises each clip before the convolutions (cepstral mean
    normalisation, in the graph, so the exported model does it too): ``"mean"`` subtracts each
    band's mean over the clip's observed frames, which removes a per-band offset of the log-mel
    (gain, channel and speaker tilt); ``"mean_std"`` also divides by each band's standard
    deviation over those frames.

    Example:
        >>> enc = SpectrogramEncoder(embed_dim=8, filters=(4, 8))
        >>> out = enc(keras.ops.zeros((2, 63, 40)))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((2, 16, 8), (2, 8))
    """

    input_kinds = ("sequence",)
    takes_step_mask = True

    def __init__(
        self,
        embed_dim: int = 64,
        filters: tuple[int, ...] = (64, 128, 128),
        kernel_size: int = 5,
        utterance_norm: str | None = None,
        input_stats: bool = False,
        spectral_peaks: int = 0,
        spectral_max: bool = False,
        channels: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        if int(kernel_size) < 1:
            raise ValueError(f"SpectrogramEncoder: kernel_size must be >= 1; got "
                             f"kernel_size={kernel_size}")
        if utterance_norm not in UTTERANCE_NORMS:
            raise ValueError(f"SpectrogramEncoder: utterance_norm must be one of "
                             f"{UTTERANCE_NORMS}, got {utterance_norm!r}")
        if int(spectral_peaks) < 0 or int(channels) < 1:
            raise ValueError(f"SpectrogramEncoder: spectral_peaks must be >= 0 and channels >= 1;"
                             f" got spectral_peaks={spectral_peaks}, channels={channels}")
        self.utterance_norm = utterance_norm
        self.input_stats = bool(input_stats)
        self.spectral_peaks = int(spectral_peaks)
        self.spectral_max = bool(spectral_max)
        self.channels = int(channels)
        self.filters = tuple(int(n) for n in filters)
        self.kernel_size = int(kernel_size)
        self.blocks = [
            (keras.layers.Conv1D(n, self.kernel_size, padding="same", activation="relu"),
             keras.layers.BatchNormalization(),
             keras.layers.MaxPooling1D(2, padding="same"))
            for n in self.filters
        ]
        self.tokenize = keras.layers.Dense(self.embed_dim) if self.return_tokens else None
        # The band statistics, the peak detectors and the projection serve pooled alone.
        self.peaks = [keras.layers.Conv1D(self.spectral_peaks, 5, padding="same",
                                          activation="relu")
                      for _ in range(2 if self.spectral_peaks and self.return_pooled else 0)]
        self.project = (keras.layers.Dense(self.embed_dim, activation="relu")
                        if self.return_pooled else None)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        shape = tuple(input_shape)
        for conv, norm, pool in self.blocks:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
            shape = pool.compute_output_shape(shape)
        if self.tokenize is not None:
            self.tokenize.build(shape)
        if (self.spectral_peaks or self.spectral_max) and input_shape[-1] % self.channels:
            raise ValueError(f"SpectrogramEncoder: {input_shape[-1]} features do not split "
                             f"into channels={self.channels} equal spectra")
        spectrum = (input_shape[0], input_shape[-1] // self.channels, self.channels)
        for conv in self.peaks:
            conv.build(spectrum)
            spectrum = conv.compute_output_shape(spectrum)
        if self.project is not None:
            stats = 2 * input_shape[-1] if self.input_stats else 0
            maxima = self.channels if self.spectral_max else 0
            self.project.build((shape[0], 2 * shape[-1] + stats + self.spectral_peaks + maxima))

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        if self.utterance_norm is not None:
            x = self._normalise(x, step_mask)
        x = zero_masked_steps(x, step_mask)
        summary = []
        if self.return_pooled and (self.input_stats or self.spectral_peaks or self.spectral_max):
            mean, variance = self._band_moments(x, step_mask)
            if self.input_stats:
                summary += [mean[:, 0], keras.ops.sqrt(variance[:, 0] + 1e-6)]
            if self.spectral_peaks:
                summary.append(self._peaks(mean[:, 0]))
            if self.spectral_max:
                summary.append(keras.ops.max(self._spectra(mean[:, 0]), axis=-1))
        for conv, norm, pool in self.blocks:
            x = pool(norm(conv(x), training=training))
        if step_mask is None:
            mask = keras.ops.ones(keras.ops.shape(x)[:2], dtype="float32")
        else:
            mask = downsample_mask(step_mask, 2 ** len(self.blocks), keras.ops.shape(x)[1])
        pooled = None
        if self.return_pooled:
            pooled = self.project(keras.ops.concatenate(
                [masked_mean(x, mask), masked_max(x, mask), *summary], axis=-1))
        if not self.return_tokens:
            return self.outputs(pooled)
        return self.outputs(pooled, self.tokenize(x), mask)

    @staticmethod
    def _band_moments(x, step_mask):
        """Per clip and band: mean and variance over the observed frames, ``[B, 1, F]`` each."""
        ops = keras.ops
        x = ops.cast(x, "float32")
        if step_mask is None:
            weight = ops.ones_like(x[..., :1])
        else:
            weight = ops.cast(ops.cast(step_mask, "float32") > 0, "float32")[..., None]
        count = ops.maximum(ops.sum(weight, axis=1, keepdims=True), 1.0)
        mean = ops.sum(x * weight, axis=1, keepdims=True) / count
        variance = ops.sum(ops.square(x - mean) * weight, axis=1, keepdims=True) / count
        return mean, variance

    def _peaks(self, levels):
        """Each peak detector's maximum over frequency of band levels ``[B, channels * bins]``."""
        y = keras.ops.transpose(self._spectra(levels), (0, 2, 1))  # [B, bins, channels]
        for conv in self.peaks:
            y = conv(y)
        return keras.ops.max(y, axis=1)

    def _spectra(self, levels):
        """Band levels ``[B, channels * bins]`` as ``[B, channels, bins]``."""
        return keras.ops.reshape(levels, (-1, self.channels, levels.shape[-1] // self.channels))

    def _normalise(self, x, step_mask):
        """Per clip and band: minus the mean (and over the std) of the observed frames."""
        mean, variance = self._band_moments(x, step_mask)
        x = keras.ops.cast(x, "float32") - mean
        if self.utterance_norm == "mean_std":
            x = x / keras.ops.sqrt(variance + 1e-5)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "utterance_norm": self.utterance_norm,
            "input_stats": self.input_stats,
            "spectral_peaks": self.spectral_peaks,
            "spectral_max": self.spectral_max,
            "channels": self.channels,
        }
