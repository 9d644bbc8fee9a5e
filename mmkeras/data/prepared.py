"""Streaming training data from a prepared folder (``python -m mmkeras.prepare``'s output).

:class:`PreparedDataset` is a :class:`~mmkeras.data.dataset.MultimodalDataset` whose splits
stay on disk: :meth:`PreparedDataset.stream` reads a split's TFRecord shards with a parallel
``interleave`` (:func:`~mmkeras.data.tfrecord.read_tfrecords`), shuffles with a bounded
buffer (``shuffle_buffer`` examples, shard order reshuffled every epoch) and batches; nothing
is cached, so memory does not grow with the dataset. The trainer takes the preprocessing
state fitted by the preparation (``info["preprocessing"]``) and the training ranges
(``info["ranges"]``) instead of refitting. ``splits[name]`` still gives a split as in-memory
arrays, read on first lookup (:attr:`PreparedDataset.loaded_splits` lists those); nothing in
mmkeras uses it: training, evaluation and the run card stream, and :meth:`PreparedDataset.head`
and :meth:`PreparedDataset.sample` give a bounded number of examples.

Example:
    ds = PreparedDataset("prepared/")
    batches = ds.stream("train", batch_size=64, shuffle=True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from mmkeras.data import fs
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.quarantine import DataError, Quarantine
from mmkeras.data.tfrecord import read_tfrecords

__all__ = ["PreparedDataset"]

CARD = "dataset.json"


class _LazySplit(Mapping):
    """One split's arrays by feature name; the keys come from the shards' schema, the arrays
    are read (all features at once) on the first lookup and kept."""

    def __init__(self, dataset: PreparedDataset, split: str) -> None:
        self._dataset, self._split = dataset, split
        schema = json.loads(fs.read_text(fs.join(fs.join(dataset.path, split), "schema.json")))
        self._keys = list(schema["features"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(key)
        if self._arrays is None:
            batches = self._dataset.records(self._split).batch(4096).as_numpy_iterator()
            self._arrays = _as_arrays(list(batches), self._split)
        return self._arrays[key]

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the arrays
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _as_arrays(batches: list[dict[str, np.ndarray]], split: str) -> dict[str, np.ndarray]:
    """Batches of stored examples as one array per feature, strings decoded to ``str``."""
    if not batches:
        raise DataError(f"split {split!r} has no examples")
    arrays = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}


class PreparedDataset(MultimodalDataset):
    """A prepared folder as a streaming dataset (see the module docstring).

    Args:
        path: the folder ``python -m mmkeras.prepare`` wrote (with ``dataset.json``).
        shuffle_buffer: examples in the training shuffle buffer (bounds memory).
        verify: check every shard's sha256 once, when its split is first read.
        names: keep only these modalities (None: all).
    """

    streaming: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike, shuffle_buffer: int = 1024,
                 verify: bool = True, names: list[str] | None = None) -> None:
        self.path = fs.clean(path)
        card_file = fs.join(self.path, CARD)
        if not fs.isfile(card_file):
            raise DataError(f"{card_file} not found: {self.path} is not a prepared folder, or "
                            "its preparation did not finish (run python -m mmkeras.prepare)")
        card = json.loads(fs.read_text(card_file))
        if card.get("format") != "mmkeras-prepared" or card.get("version") != 1:
            raise DataError(f"{card_file}: not an mmkeras-prepared v1 folder")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        specs = {n: ModalitySpec(n, m["kind"], tuple(m["shape"]), m["dtype"], m["options"])
                 for n, m in card["modalities"].items()}
        if names is not None:
            unknown = [n for n in names if n not in specs]
            if unknown:
                raise ValueError(f"dataset {card['name']!r} has no modality {unknown}; "
                                 f"available: {list(specs)}")
            specs = {n: specs[n] for n in names}
        self.card, self.counts = card, dict(card["num_examples"])
        self.shuffle_buffer, self.verify = shuffle_buffer, verify
        self._verified: set[str] = set()
        state = json.loads(fs.read_text(fs.join(self.path, "preprocessing.json")))
        quarantine = Quarantine()
        report = fs.join(self.path, "quarantine.csv")
        if fs.isfile(report):
            import csv

            with fs.open_file(report) as f:
                for row in csv.DictReader(f):
                    quarantine.add(row["record"], row["reason"])
        info = {
            "path": self.path,
            "preprocessing": {n: state[n] for n in specs},
            "ranges": {n: r for n, r in card.get("ranges", {}).items() if n in specs},
            "quarantine": quarantine,
        }
        splits = {split: _LazySplit(self, split) for split in self.counts}
        super().__init__(card["name"], specs, list(card["class_names"]), splits, info)

    def select(self, names: list[str] | None) -> PreparedDataset:
        """Keep only the named modalities (all when ``names`` is None)."""
        if names is None or names == list(self.modalities):
            return self
        return PreparedDataset(self.path, self.shuffle_buffer, self.verify, names)

    def num_examples(self, split: str) -> int:
        return int(self.counts[split])

    @property
    def loaded_splits(self) -> list[str]:
        """The splits read into memory through ``splits[name]`` (none unless a user asked)."""
        return [name for name, split in self.splits.items() if split._arrays is not None]

    def head(self, split: str, n: int) -> dict[str, np.ndarray]:
        """The first ``n`` stored examples of ``split`` (fewer if it is shorter) as arrays by
        feature, strings as ``str``; reads only those examples."""
        batches = self.records(split).take(n).batch(max(n, 1)).as_numpy_iterator()
        return _as_arrays(list(batches), split)

    def sample(self, split: str, n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], int]:
        """A uniform random sample of ``n`` examples of ``split`` without replacement, and the
        number of examples read (the split's size).

        One streamed pass of reservoir sampling (Vitter's algorithm R, its random numbers from
        ``numpy.random.default_rng(seed)``) in batches of up to 256: at most ``n`` examples
        and one batch are held at once. The sample keeps the stored order; with ``n`` at least
        the split's size it is the whole split.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        kept: dict[str, np.ndarray] = {}
        index = np.zeros(0, np.int64)  # stored position of each kept example, by slot
        seen = 0
        for batch in self.records(split).batch(min(n, 256)).as_numpy_iterator():
            size = len(batch["label"])
            positions = np.arange(seen, seen + size)
            fill = min(max(n - seen, 0), size)  # the first n examples fill the reservoir
            if fill:
                kept = {k: np.concatenate([kept[k], v[:fill]]) if kept else v[:fill].copy()
                        for k, v in batch.items()}
                index = np.concatenate([index, positions[:fill]])
            if fill < size:  # example t replaces a random slot with probability n / (t + 1)
                slots = rng.integers(0, positions[fill:] + 1)
                chosen = np.flatnonzero(slots < n)
                last = {int(slots[i]): fill + int(i) for i in chosen}  # later ones win
                if last:
                    to, frm = np.fromiter(last, np.int64), np.fromiter(last.values(), np.int64)
                    for k, v in batch.items():
                        kept[k][to] = v[frm]
                    index[to] = positions[frm]
            seen += size
        order = np.argsort(index, kind="stable")
        arrays = _as_arrays([{k: v[order] for k, v in kept.items()}] if kept else [], split)
        return arrays, seen

    def records(self, split: str, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """One split's stored examples, unbatched (``{feature: tensor}``)."""
        if split not in self.counts:
            raise ValueError(f"unknown split {split!r}; available: {list(self.counts)}")
        verify = self.verify and split not in self._verified
        ds = read_tfrecords(fs.join(self.path, split), shuffle_files=shuffle, seed=seed,
                            verify=verify)
        self._verified.add(split)
        return ds

    def stream(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               targets: dict[str, str] | None = None) -> tf.data.Dataset:
        """``(inputs, label)`` batches read from the shards, as ``to_tf_dataset`` gives them.

        ``inputs`` holds every modality and, for optional ones, ``<name>_present``; with
        ``targets`` (``{output: stored feature}``) the label is a dict of those features.
        """
        names = list(self.modalities)
        present = [f"{n}_present" for n in names if n in self.card.get("optional", [])]
        if targets:
            stored = {*self.card["modalities"], "label", "row", "start_s"}
            missing = sorted(set(targets.values()) - stored)
            if missing:
                raise ValueError(f"split {split!r} has no target arrays {missing}; "
                                 f"available: {sorted(stored)}")

        def pair(example: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], Any]:
            inputs = {k: example[k] for k in [*names, *present]}
            if not targets:
                return inputs, tf.cast(example["label"], tf.int32)
            return inputs, {out: tf.cast(example[col], tf.int32 if col == "label" else
                                         tf.float32) for out, col in targets.items()}

        ds = self.records(split, shuffle=shuffle, seed=seed)
        if shuffle:
            ds = ds.shuffle(min(self.shuffle_buffer, self.num_examples(split)), seed=seed,
                            reshuffle_each_iteration=True)
        ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        return ds.prefetch(tf.data.AUTOTUNE)
