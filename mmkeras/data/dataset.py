"""In-memory multimodal datasets and their ``tf.data`` pipelines.

A dataset definition in ``data_pipelines/`` returns a :class:`MultimodalDataset`: one
:class:`ModalitySpec` per modality (what the model's raw input looks like) and, per split, a dict
of arrays keyed by modality name plus ``"label"``. :func:`to_tf_dataset` turns a split into a
batched, prefetched ``tf.data.Dataset`` of ``(inputs_dict, label)``.

Example:
    >>> spec = ModalitySpec("audio", "audio", (8000,), options={"sample_rate": 8000})
    >>> spec.tensor_spec().shape.as_list()
    [None, 8000]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

KINDS = ("timeseries", "audio", "text", "image", "tabular")


@dataclass(frozen=True)
class ModalitySpec:
    """What one modality's raw model input is.

    Args:
        name: input name, also the key in every batch dict.
        kind: one of ``timeseries`` ([T, C] floats), ``audio`` ([samples] waveform in [-1, 1]),
            ``text`` (scalar string), ``image`` ([H, W, C] uint8 or float) or ``tabular``
            ([F] float features).
        shape: per-example shape, without the batch axis.
        dtype: ``float32``, ``uint8`` or ``string``.
        options: kind-specific settings, e.g. ``sample_rate`` for audio.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")

    def tensor_spec(self) -> tf.TensorSpec:
        """Batched ``tf.TensorSpec`` of the raw input (used for the serving signature)."""
        return tf.TensorSpec((None, *self.shape), tf.as_dtype(self.dtype), name=self.name)


@dataclass
class MultimodalDataset:
    """Splits of aligned, windowed examples with their modality specs and class names.

    Each split maps modality names to arrays with one row per example, plus ``"label"`` (int) and
    any metadata columns (e.g. ``"machine_id"``) that pipelines keep for reporting.
    A ``streaming`` subclass (:class:`mmkeras.data.prepared.PreparedDataset`) reads its
    splits from disk in ``stream()`` instead.
    """

    streaming: ClassVar[bool] = False
    name: str
    modalities: dict[str, ModalitySpec]
    class_names: list[str]
    splits: dict[str, dict[str, np.ndarray]]
    info: dict[str, Any] = field(default_factory=dict)

    def select(self, names: list[str] | None) -> MultimodalDataset:
        """Keep only the named modalities (all when ``names`` is None)."""
        if names is None:
            return self
        unknown = [n for n in names if n not in self.modalities]
        if unknown:
            raise ValueError(
                f"dataset {self.name!r} has no modality {unknown}; "
                f"available: {list(self.modalities)}"
            )
        drop = set(self.modalities) - set(names)
        splits = {s: {k: v for k, v in arrays.items() if k not in drop}
                  for s, arrays in self.splits.items()}
        return MultimodalDataset(
            self.name, {n: self.modalities[n] for n in names}, self.class_names, splits, self.info
        )

    def num_examples(self, split: str) -> int:
        return len(self.splits[split]["label"])


def to_tf_dataset(
    dataset: MultimodalDataset,
    split: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    targets: dict[str, str] | None = None,
) -> tf.data.Dataset:
    """``(inputs, label)`` batches of one split: slice, optional shuffle, batch, cast, prefetch.

    With ``targets`` (``{output name: split array}``) the label is a dict of those arrays
    instead, e.g. ``{"probabilities": "label", "speed": "speed"}`` for a multi-task model.
    A streaming dataset gives its own ``stream()`` (shards, bounded shuffle buffer).
    """
    if dataset.streaming:
        return dataset.stream(split, batch_size, shuffle=shuffle, seed=seed, targets=targets)
    arrays = dataset.splits[split]
    inputs = {name: arrays[name] for name in dataset.modalities}
    if targets:
        missing = sorted(set(targets.values()) - set(arrays))
        if missing:
            raise ValueError(f"split {split!r} has no target arrays {missing}; "
                             f"available: {sorted(arrays)}")
        labels = {out: arrays[col].astype(np.int32 if col == "label" else np.float32)
                  for out, col in targets.items()}
    else:
        labels = arrays["label"].astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle:
        ds = ds.shuffle(len(arrays["label"]), seed=seed, reshuffle_each_iteration=True)
    dtypes = {name: tf.as_dtype(spec.dtype) for name, spec in dataset.modalities.items()}

    def cast(x: dict[str, tf.Tensor], y: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        return {k: tf.cast(v, dtypes[k]) if dtypes[k] != tf.string else v for k, v in x.items()}, y

    ds = ds.batch(batch_size).map(cast, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
