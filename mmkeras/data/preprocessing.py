"""In-graph preprocessing fitted on the training split only.

:func:`fit_preprocessing` makes one pass over the training split and returns, per modality, a
JSON-serialisable state: standardisation statistics (per channel for time series and images, per
mel band of the log-mel spectrogram for audio) or the text vocabulary.
:func:`preprocessing_layers` turns a state into Keras layers that sit at the start of the model,
so the exported model consumes raw values.

Example:
    >>> state = fit_preprocessing(dataset)                      # doctest: +SKIP
    >>> layers = preprocessing_layers(dataset.modalities["audio"], state["audio"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from mmkeras.data.audio import LogMelSpectrogram
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.standardize import Standardizer, fit_stats

TEXT_DEFAULTS = {"max_tokens": 5000, "sequence_length": 32}
LOGMEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")


def _logmel_layer(spec: ModalitySpec) -> LogMelSpectrogram:
    kwargs = {k: spec.options[k] for k in LOGMEL_KEYS if k in spec.options}
    return LogMelSpectrogram(**kwargs, name=f"{spec.name}_logmel")


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
        if spec.kind in ("timeseries", "image"):
            batches = (b.astype(np.float32) for b in _batches(data, batch_size))
            state[name] = {"standardizer": fit_stats(batches).to_dict()}
        elif spec.kind == "audio":
            logmel = _logmel_layer(spec)
            batches = (
                keras.ops.convert_to_numpy(logmel(b.astype(np.float32)))
                for b in _batches(data, batch_size)
            )
            state[name] = {"standardizer": fit_stats(batches).to_dict()}
        else:  # text
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
    if spec.kind == "audio":
        return [_logmel_layer(spec), scale]
    return [scale]
