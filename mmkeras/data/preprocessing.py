"""In-graph preprocessing fitted on the training split only.

:func:`fit_preprocessing` makes one pass over the training split and returns, per modality, a
JSON-serialisable state: standardisation statistics (per channel for time series and images, per
mel band of the log-mel spectrogram for audio, per channel and frequency bin of the log power
spectrogram for time series whose spec asks for one) or the text vocabulary.
:func:`preprocessing_layers` turns a state into Keras layers that sit at the start of the model,
so the exported model consumes raw values.

Example:
    state = fit_preprocessing(dataset)
    layers = preprocessing_layers(dataset.modalities["audio"], state["audio"])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from mmkeras.data.audio import LogMelAndKurtosis, LogMelSpectrogram
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.sensor import AppendDifferences, LogPowerSpectrogram
from mmkeras.data.standardize import Standardizer, fit_stats

TEXT_DEFAULTS = {"max_tokens": 5000, "sequence_length": 32}
SPECTRUM_STANDARDIZE = ("bin", "channel")
LOGMEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db",
               "kurtosis_bands")


def is_spectral(spec: ModalitySpec) -> bool:
    """Whether the modality reaches its encoder as a spectrogram ``[frames, features]``."""
    return spec.kind == "audio" or bool(spec.options.get("spectrogram"))


def fixed_transform(spec: ModalitySpec) -> keras.layers.Layer | None:
    """The fixed (not fitted) layer applied to a modality's raw input before standardisation.

    Audio: :class:`LogMelSpectrogram` (``sample_rate``, ``n_fft``, ``hop_length``, ``n_mels``,
    ``fmin``, ``fmax``, ``top_db`` from ``spec.options``), or :class:`LogMelAndKurtosis` when
    the options also name ``kurtosis_bands``. Time series with
    ``options["spectrogram"] = {"n_fft": ..., "hop_length": ...}``: :class:`LogPowerSpectrogram`;
    with ``options["differences"] = True``: :class:`AppendDifferences`.
    """
    if spec.kind == "audio":
        kwargs = {k: spec.options[k] for k in LOGMEL_KEYS if k in spec.options}
        layer = LogMelAndKurtosis if "kurtosis_bands" in kwargs else LogMelSpectrogram
        return layer(**kwargs, name=f"{spec.name}_logmel")
    if spec.kind == "timeseries" and spec.options.get("spectrogram"):
        kwargs = {k: v for k, v in spec.options["spectrogram"].items() if k != "standardize"}
        return LogPowerSpectrogram(**kwargs, name=f"{spec.name}_spectrogram")
    if spec.kind == "timeseries" and spec.options.get("differences"):
        return AppendDifferences(name=f"{spec.name}_differences")
    return None


def finish_standardizer(name: str, kind: str, options: dict[str, Any], channels: int,
                        standardizer: Standardizer) -> Standardizer:
    """Modality ``name``'s fitted per-feature standardizer, pooled per channel where asked.

    A time series' ``spectrogram`` option ``standardize: channel`` gives each channel's spectrum
    one mean and std over all its bins (``bin``, the default: one per bin), which keeps the
    spectrum's shape for encoders that look along frequency (``spectrogram_cnn``'s
    ``spectral_peaks``).
    """
    spectrogram = (options.get("spectrogram") or {}) if kind == "timeseries" else {}
    mode = spectrogram.get("standardize", "bin")
    if mode not in SPECTRUM_STANDARDIZE:
        raise ValueError(f"modality {name!r}: spectrogram option standardize must be one of "
                         f"{', '.join(SPECTRUM_STANDARDIZE)}; got {mode!r}")
    return standardizer.pooled(channels) if mode == "channel" else standardizer


def _batches(array: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(array), batch_size):
        yield array[start:start + batch_size]


def fit_preprocessing(
    dataset: MultimodalDataset, split: str = "train", batch_size: int = 256
) -> dict[str, dict[str, Any]]:
    """Fit every modality's preprocessing on ``split`` (the training split) alone."""
    arrays = dataset.splits[split]
    state: dict[str, dict[str, Any]] = {}
    for name, spec in dataset.modalities.items():
        data = arrays[name]
        if spec.kind != "text":
            transform = fixed_transform(spec)
            batches = (b.astype(np.float32) for b in _batches(data, batch_size))
            if transform is not None:
                batches = (keras.ops.convert_to_numpy(transform(b)) for b in batches)
            standardizer = finish_standardizer(name, spec.kind, spec.options, spec.shape[-1],
                                               fit_stats(batches))
            state[name] = {"standardizer": standardizer.to_dict()}
        else:
            options = {**TEXT_DEFAULTS, **spec.options}
            vectorizer = keras.layers.TextVectorization(max_tokens=options["max_tokens"])
            vectorizer.adapt(np.asarray(data, dtype=object).astype(str), batch_size=batch_size)
            state[name] = {
                "vocabulary": vectorizer.get_vocabulary()[2:],  # without padding and OOV
                "sequence_length": options["sequence_length"],
            }
    return state


def preprocessing_layers(spec: ModalitySpec, state: dict[str, Any]) -> list[keras.layers.Layer]:
    """The layers that map this modality's raw input to standardised model features."""
    if spec.kind == "text":
        return [keras.layers.TextVectorization(
            vocabulary=state["vocabulary"],
            output_sequence_length=state["sequence_length"],
            name=f"{spec.name}_tokens",
        )]
    scale = Standardizer.from_dict(state["standardizer"]).to_layer(name=f"{spec.name}_standardize")
    transform = fixed_transform(spec)
    return [scale] if transform is None else [transform, scale]
