"""Dataset ``prepared``: a folder written by ``python -m mmkeras.prepare``, streamed from disk.

``python -m mmkeras.train dataset=prepared dataset_args.path=DIR`` trains on it: the shards
are read with ``interleave`` and a bounded shuffle buffer, and the preprocessing state fitted
by the preparation is used as is (see :mod:`mmkeras.data.prepared`).

Example:
    >>> from data_pipelines import load_dataset
    >>> ds = load_dataset("prepared", path="prepared/")   # doctest: +SKIP
"""

from __future__ import annotations

from mmkeras.data.prepared import PreparedDataset
from mmkeras.data.quarantine import BadRecordError, DataError


def load(path: str | None = None, strict: bool = False, shuffle_buffer: int = 1024,
         verify: bool = True) -> PreparedDataset:
    """Open a prepared folder.

    Args:
        path: the ``--out`` folder of ``python -m mmkeras.prepare``.
        strict: refuse a preparation that skipped bad rows (its report is
            ``DIR/quarantine.csv``): raise :class:`BadRecordError` naming the first.
        shuffle_buffer: examples held in the training shuffle buffer.
        verify: check each shard's sha256 once before reading it.
    """
    if path is None:
        raise DataError("dataset=prepared needs dataset_args.path=DIR: the --out folder of "
                        "python -m mmkeras.prepare")
    dataset = PreparedDataset(path, shuffle_buffer=shuffle_buffer, verify=verify)
    quarantine = dataset.info["quarantine"]
    if strict and len(quarantine):
        record, reason = quarantine.records[0]
        raise BadRecordError(f"{record}: {reason} (strict mode: {path} was prepared with "
                             f"{len(quarantine)} bad row(s) skipped, see its quarantine.csv)")
    return dataset
