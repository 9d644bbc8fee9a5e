"""Manifest to prepared shards on Apache Beam: validate, align, window, split, write, fit.

:func:`prepare` runs one Beam pipeline (any runner: the options are Beam's own, see
``python -m mmkeras.prepare --help``):

1. the manifest's rows (``(row number, cells)``; the table is read with
   :func:`mmkeras.data.manifest.open_manifest` by the launcher, to check its columns before
   anything runs, and again by a worker, which spreads the rows) are validated one by one with
   :func:`mmkeras.data.manifest.validate_row`, so a bad row goes to the quarantine side output
   with exactly the record and reason :func:`~mmkeras.data.manifest.read_manifest` gives;
2. each good row becomes one example, or, with a windowed schema, its streams are aligned
   onto the timeline and cut into windows (:mod:`mmkeras.data.align`,
   :mod:`mmkeras.data.windowing`, :mod:`mmkeras.data.impute`);
3. the row's group value picks its split (:meth:`PrepareSchema.split_of`: by hash, never by
   window);
4. each split is written as sharded, checksummed TFRecords in the
   :mod:`mmkeras.data.tfrecord` format: a row's examples go to the shard its row number
   hashes to, and a shard holds its examples sorted by (row, window), so the files are the
   same on every run and runner. Each row is first written to its own part file (under
   ``.parts/``, removed at the end) and only the part files' names are grouped by shard, so
   no runner holds the serialized examples in memory (the DirectRunner keeps a
   ``GroupByKey``'s values in the launcher's memory);
5. the training split alone feeds :class:`PreprocessingStats`, a Beam ``CombineFn`` of the
   mergeable :class:`~mmkeras.data.standardize.RunningStats` (after the modality's fixed
   front end, e.g. the log-mel spectrogram) and of token counts (top-k vocabulary), written
   as the same preprocessing state :func:`mmkeras.data.preprocessing.fit_preprocessing` gives.

Output folder::

    train/ val/ test/      schema.json + part-SSSSS-of-NNNNN.tfrecord.gz (read_tfrecords)
    preprocessing.json     the fitted state (modality -> standardizer / vocabulary)
    quarantine.csv         record,reason of every bad row (the manifest reader's report)
    dataset.json           name, class names, modality specs, counts, training ranges,
                           window counts (kept, dropped for low presence, recordings shorter
                           than a window; from Beam counters); written last: its presence
                           marks a complete preparation

Each stored example holds the modalities' raw inputs (the dtype and shape of their
:class:`~mmkeras.data.dataset.ModalitySpec`), ``<name>_present`` ``[1]`` for optional
modalities, ``label`` (int32 class index), ``group`` (string), ``row`` (int64 manifest row) and
``start_s`` (float64 start of the window on the recording's timeline; 0 for row examples).

Paths may be URLs (``gs://``, ``hdfs://``, ``file://``: :mod:`mmkeras.data.fs`, through
TensorFlow's file systems): the manifest, the files its rows name (relative to the manifest,
or absolute paths or URLs of their own) and ``--out``. So on Dataflow, whose workers share no
disk, everything lives in a bucket; on Flink or Spark, in a bucket or on a file system every
worker mounts.

Example:
    summary = prepare("manifest.csv", "schema.yaml", "prepared/",
                      ["--runner=DirectRunner", "--direct_num_workers=2",
                       "--direct_running_mode=multi_processing"])
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import keras
import numpy as np
import tensorflow as tf
import yaml
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.interactive_utils import is_in_ipython
from tqdm import tqdm

from mmkeras.data import fs
from mmkeras.data.align import align_streams, fixed_rate_grid
from mmkeras.data.audio import read_audio
from mmkeras.data.download import sha256_file
from mmkeras.data.image import decode_image
from mmkeras.data.impute import impute
from mmkeras.data.manifest import (
    _label_key,
    open_manifest,
    read_stream,
    read_stream_window,
    validate_row,
)
from mmkeras.data.prepare_schema import SPLITS, PrepareSchema, load_schema
from mmkeras.data.preprocessing import TEXT_DEFAULTS, finish_standardizer, fixed_transform
from mmkeras.data.quarantine import EmptyDataError, Quarantine
from mmkeras.data.standardize import RunningStats, Standardizer
from mmkeras.data.tfrecord import serialize_example, shard_name, write_schema
from mmkeras.data.windowing import sliding_windows, window_starts
from mmkeras.models.preprocessor import spec_from_dict

__all__ = ["LOCAL_OPTIONS", "PreprocessingStats", "prepare", "stored_features"]

LOCAL_OPTIONS = ["--runner=DirectRunner", "--direct_num_workers=2",
                 "--direct_running_mode=multi_processing",
                 "--default_sdk_harness_log_level=WARNING"]
"""The default pipeline options: DirectRunner with two worker processes (their INFO log off)."""
COMPRESSION = "GZIP"
METRICS = "mmkeras.prepare"
PARTS = ".parts"  # per-row part files under the output folder, removed when the run ends
_BATCH = 64  # examples per batch of a modality's fixed front end in the statistics


def stored_features(schema: PrepareSchema) -> dict[str, dict[str, Any]]:
    """The shards' features (name -> ``{"dtype", "shape"}``), as in ``schema.json``."""
    features: dict[str, dict[str, Any]] = {}
    for name, spec in schema.modality_specs().items():
        features[name] = {"dtype": spec.dtype, "shape": list(spec.shape)}
        if not schema.modalities[name].required:
            features[f"{name}_present"] = {"dtype": "float32", "shape": [1]}
    features["label"] = {"dtype": "int32", "shape": []}
    features["group"] = {"dtype": "string", "shape": []}
    features["row"] = {"dtype": "int64", "shape": []}
    features["start_s"] = {"dtype": "float64", "shape": []}
    return features


# ------------------------------------------------------------------------------ reading rows
class _RowError(Exception):
    def __init__(self, reason: str, file: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.file = reason, file


class ReadRow(beam.DoFn):
    """``(row number, cells)`` -> ``(split, row number, [example, ...])`` (the row's examples in
    window order); bad rows -> ``quarantine`` ``(row number, record, reason)``."""

    QUARANTINE = "quarantine"

    def __init__(self, schema: PrepareSchema, manifest: str) -> None:
        self.schema, self.manifest = schema, manifest

    def setup(self) -> None:
        self.fields = dict(self.schema.manifest_schema().fields)
        self.base = fs.parent(self.manifest)

    def process(self, element: tuple[int, dict[str, Any]]) -> Iterator[Any]:
        n, row = element
        fields = {k: f for k, f in self.fields.items() if f.columns(k)[0] in row}
        values, bad = validate_row(self.manifest, n, row, fields)
        group = row.get(self.schema.split.column)
        if bad is None and _empty(group):
            bad = (f"{self.manifest}:row {n}",
                   f"missing value: group column {self.schema.split.column!r} is empty")
        if bad is None:
            try:
                examples = list(self._examples(n, row, values))
            except _RowError as err:
                where = f" ({err.file})" if err.file else ""
                bad = (f"{self.manifest}:row {n}{where}", err.reason)
        if bad is not None:
            yield beam.pvalue.TaggedOutput(self.QUARANTINE, (n, *bad))
            return
        group = str(_label_key(group))
        for example in examples:
            example.update(group=group, row=np.int64(n))
        yield self.schema.split_of(group), n, examples

    def _examples(self, n: int, row: dict[str, Any], values: dict[str, Any]
                  ) -> Iterator[dict[str, Any]]:
        schema = self.schema
        common: dict[str, Any] = {}
        for name, m in schema.modalities.items():
            if name in schema.streams():
                continue
            common.update(_row_modality(name, m, schema.shape(name), values))
        label = values[schema.label.column]
        classes = [_label_key(c) for c in schema.label.classes]
        common["label"] = np.int32(classes.index(_label_key(label)))
        if not schema.streams():
            yield {**common, "start_s": np.float64(0.0)}
            return
        for window in self._windows(row):
            yield {**common, **window}

    def _windows(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Align a recording's streams onto the timeline and cut its windows."""
        schema = self.schema
        integer = schema.timeline.time_unit == "ns"
        streams, absent = {}, []
        for name in schema.streams():
            m = schema.modalities[name]
            cell = row.get(f"{name}_path")
            if _empty(cell):
                if m.required:
                    raise _RowError(f"missing value: column '{name}_path' is empty")
                absent.append(name)
                continue
            file = fs.join(self.base, str(cell))
            if not fs.isfile(file):
                raise _RowError(f"missing file: {name}_path does not exist", file)
            try:
                t, x = read_stream(file)
            except OSError as err:
                raise _RowError(f"unreadable file: {err.strerror or err}", file) from err
            except ValueError as err:
                raise _RowError(str(err).removeprefix(f"{file}: "), file) from err
            if x.shape[1] != m.channels:
                raise _RowError(f"bad stream: {x.shape[1]} value column(s), expected "
                                f"{m.channels}", file)
            if integer:
                t = np.rint(t).astype(np.int64)
            streams[name] = (t, x)
        if not streams:
            raise _RowError(f"no stream: every stream of {schema.streams()} is absent")
        start = max(t.min() for t, _ in streams.values())
        stop = min(t.max() for t, _ in streams.values())
        if stop <= start:
            raise _RowError(f"no common time span: the streams do not overlap (start {start} "
                            f">= end {stop})")
        rate = schema.timeline.rate_hz
        end = int(stop) + 1 if integer else float(np.nextafter(stop, np.inf))
        grid = fixed_rate_grid(int(start) if integer else float(start), end, rate)
        methods = {}
        for name in streams:
            a = schema.modalities[name].align
            tol = a.tolerance
            if tol is not None and integer:
                tol = round(tol * 1e9)
            kwargs = {"method": a.method, "duplicates": "mean"}
            if tol is not None:
                kwargs["tolerance"] = tol
            methods[name] = kwargs
        try:
            aligned = align_streams(streams, grid, methods)
        except ValueError as err:
            raise _RowError(f"bad stream: {err}") from err
        length, hop = schema.steps("length_s"), schema.steps("hop_s")
        starts = window_starts(grid.size, length, hop)
        if starts.size == 0:
            _count("recordings_shorter_than_a_window")
            return
        presence = {s: sliding_windows(a.mask, length, hop).mean(axis=1)
                    for s, a in aligned.items()}
        keep = np.min(np.stack(list(presence.values())), axis=0) >= schema.window.min_presence
        _count("windows_kept", int(keep.sum()))
        _count("windows_dropped_low_presence", int((~keep).sum()))
        windows = {}
        for name, a in aligned.items():
            filled, _ = impute(a.values, a.mask, strategy=schema.modalities[name].impute)
            windows[name] = sliding_windows(filled.astype(np.float32), length, hop)
        for i in np.flatnonzero(keep):
            out: dict[str, Any] = {"start_s": np.float64(starts[i] / rate)}
            for name in schema.streams():
                m = schema.modalities[name]
                if name in absent:
                    out[name] = np.zeros((length, m.channels), np.float32)
                else:
                    out[name] = np.ascontiguousarray(windows[name][i])
                if not m.required:
                    out[f"{name}_present"] = np.float32([name not in absent])
            yield out


def _count(name: str, n: int = 1) -> None:
    """A Beam counter of the preparation (``dataset.json`` ``windows``)."""
    beam.metrics.Metrics.counter(METRICS, name).inc(n)


def _row_modality(name: str, m: Any, shape: tuple[int, ...], values: dict[str, Any]
                  ) -> dict[str, Any]:
    """The raw input of one per-row modality from :func:`validate_row`'s values."""
    if m.kind == "numeric":
        cols = [f"{name}_{i}" for i in range(shape[0])] if m.shape else [name]
        cells = [values.get(c) for c in cols]
        present = all(c is not None and not _isnan(c) for c in cells)
        value = np.array([c if present else 0.0 for c in cells], np.float32)
    else:
        cell = values.get(name if m.kind == "text" else f"{name}_path")
        present = not _empty(cell)
        if m.kind == "text":
            value = str(cell) if present else ""
        elif not present:
            value = np.zeros(shape, np.uint8 if m.kind == "image" else np.float32)
        elif m.kind == "audio":
            clip = read_audio(cell)[0][: shape[0]]
            value = np.zeros(shape, np.float32)
            value[: clip.size] = clip
        elif m.kind == "image":
            image = decode_image(tf.io.read_file(cell), shape[2])
            value = tf.image.resize_with_crop_or_pad(image, shape[0], shape[1]).numpy()
        else:  # a stream window of the row
            value = read_stream_window(cell, values[f"{name}_start_s"], values[f"{name}_end_s"],
                                       shape[0])
    out = {name: value}
    if not m.required:
        out[f"{name}_present"] = np.float32([present])
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()) or str(value) == "<NA>"


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ------------------------------------------------------------------------------- statistics
class PreprocessingStats(beam.CombineFn):
    """Beam combiner of the training split's preprocessing state and input ranges.

    Per modality: a :class:`~mmkeras.data.standardize.RunningStats` of the features after the
    modality's fixed front end (:func:`~mmkeras.data.preprocessing.fixed_transform`, applied
    to batches of 64 examples), merged across workers with Chan's parallel update; for text,
    token counts (lower-cased, punctuation stripped, split on whitespace, as
    ``TextVectorization``) of which the top ``max_tokens - 2`` form the vocabulary (ties by
    token, descending, as Keras). The output is ``{"state": fit_preprocessing's state,
    "ranges": {modality: {"low", "high"}}}`` (per-channel raw minimum and maximum of float
    non-audio modalities, as the run's ``dataset.json`` records them).
    """

    def __init__(self, specs: dict[str, dict[str, Any]]) -> None:
        self.specs = specs

    def create_accumulator(self) -> dict[str, Any]:
        return {name: {"pending": [], "stats": None, "raw": None, "tokens": collections.Counter()}
                for name in self.specs}

    def add_input(self, acc: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
        for name, spec in self.specs.items():
            if spec["kind"] == "text":
                acc[name]["tokens"].update(_tokens(str(example[name])))
                continue
            acc[name]["pending"].append(np.asarray(example[name]))
            if len(acc[name]["pending"]) >= _BATCH:
                self._flush(name, acc[name])
        return acc

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        out = self.create_accumulator()
        for acc in accumulators:
            for name in self.specs:
                self._flush(name, acc[name])
                part, mine = acc[name], out[name]
                for key in ("stats", "raw"):
                    if part[key] is not None:
                        mine[key] = part[key] if mine[key] is None else mine[key].merge(part[key])
                mine["tokens"].update(part["tokens"])
        return out

    def compact(self, acc: dict[str, Any]) -> dict[str, Any]:
        for name in self.specs:
            self._flush(name, acc[name])
        return acc

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        state, ranges = {}, {}
        for name, spec in self.specs.items():
            part = acc[name]
            if spec["kind"] == "text":
                options = {**TEXT_DEFAULTS, **spec["options"]}
                ranked = sorted(part["tokens"].items(), key=lambda kv: (kv[1], kv[0].encode()),
                                reverse=True)
                state[name] = {"vocabulary": [t for t, _ in ranked[: options["max_tokens"] - 2]],
                               "sequence_length": options["sequence_length"]}
                continue
            self._flush(name, part)
            if part["stats"] is None:
                raise EmptyDataError(f"modality {name!r}: no training examples to fit on")
            standardizer = finish_standardizer(name, spec["kind"], spec["options"],
                                               spec["shape"][-1],
                                               Standardizer.from_stats(part["stats"]))
            state[name] = {"standardizer": standardizer.to_dict()}
            if part["raw"] is not None:
                ranges[name] = {"low": part["raw"].min.tolist(), "high": part["raw"].max.tolist()}
        return {"state": state, "ranges": ranges}

    def _flush(self, name: str, part: dict[str, Any]) -> None:
        if not part["pending"]:
            return
        spec = self.specs[name]
        batch = np.stack(part["pending"]).astype(np.float32)
        part["pending"] = []
        if spec["dtype"].startswith("float") and spec["kind"] != "audio":
            raw = batch.reshape(-1, batch.shape[-1] if batch.ndim > 2 else 1)
            part["raw"] = part["raw"] or RunningStats(0)
            part["raw"].update(raw)
        transform = _transform(json.dumps(spec, sort_keys=True))
        if transform is not None:
            batch = keras.ops.convert_to_numpy(transform(batch))
        part["stats"] = part["stats"] or RunningStats(0)
        part["stats"].update(batch)


_TRANSFORMS: dict[str, Any] = {}


def _transform(spec_json: str) -> Any:
    """The modality's fixed front end, built once per worker process."""
    if spec_json not in _TRANSFORMS:
        _TRANSFORMS[spec_json] = fixed_transform(spec_from_dict(json.loads(spec_json)))
    return _TRANSFORMS[spec_json]


def _tokens(text: str) -> list[str]:
    """``TextVectorization``'s default standardisation and whitespace split."""
    text = tf.strings.regex_replace(tf.strings.lower(text),
                                    r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']', "")
    return [t.decode() for t in tf.strings.split(text).numpy()]


# ---------------------------------------------------------------------------------- writing
class WritePart(beam.DoFn):
    """``(split, row number, examples)`` -> ``((split, shard), (row, part file, count))``: the
    row's serialized examples in an uncompressed part file named by the row (a retried bundle
    rewrites the same bytes), so only file names are grouped by shard, never examples."""

    def __init__(self, parts: str, features: dict, num_shards: int) -> None:
        self.parts, self.features, self.num_shards = parts, features, num_shards

    def process(self, element: tuple[str, int, list[dict]]) -> Iterator[tuple[tuple, tuple]]:
        split, row, examples = element
        if not examples:
            return
        shard = _shard_of(f"{row:012d}", self.num_shards)
        folder = fs.join(self.parts, f"{split}/{shard:05d}")
        fs.makedirs(folder)
        path = fs.join(folder, f"{row:012d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for example in examples:
                writer.write(serialize_example(example, self.features))
        yield (split, shard), (row, path, len(examples))


class WriteShard(beam.DoFn):
    """``((split, shard), [(row, part file, count)])`` -> ``(split, shard record)``: one
    TFRecord shard, the parts' examples in row order (so the same bytes on every run)."""

    def __init__(self, out: str, num_shards: int) -> None:
        self.out, self.num_shards = out, num_shards

    def process(self, element: tuple[tuple[str, int], Any]) -> Iterator[tuple[str, dict]]:
        (split, shard), parts = element
        parts = sorted(parts)
        name = shard_name(shard, self.num_shards, COMPRESSION)
        fs.makedirs(fs.join(self.out, split))
        path = fs.join(self.out, f"{split}/{name}")
        records = tf.data.TFRecordDataset([p for _, p, _ in parts], buffer_size=1 << 20)
        with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(COMPRESSION)) as writer:
            for data in records.as_numpy_iterator():
                writer.write(data)
        yield split, {"file": name, "num_examples": sum(n for _, _, n in parts),
                      "num_bytes": fs.stat(path)[0], "sha256": sha256_file(path)}


def _shard_of(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % num_shards


def _write_split_schema(element: tuple[str, Any], out: str, features: dict) -> str:
    split, shards = element
    shards = sorted(shards, key=lambda s: s["file"])
    write_schema(fs.join(out, split), features, COMPRESSION, shards)
    return split


def _write_json(value: Any, path: str) -> None:
    fs.write_text(path, json.dumps(value, indent=2) + "\n")


def _write_quarantine(records: list[tuple[int, str, str]], path: str) -> None:
    q = Quarantine()
    for _, record, reason in sorted(records):
        q.add(record, reason)
    q.write(path)


# --------------------------------------------------------------------------------- pipeline
def manifest_rows(manifest: str | os.PathLike, schema: PrepareSchema
                  ) -> list[tuple[int, dict[str, Any]]]:
    """The manifest's ``(row number, cells)`` after the column checks.

    Raises:
        ValueError: naming the manifest and the missing columns (schema, stream or group).
    """
    table, _ = open_manifest(manifest, schema.manifest_schema())
    needed = [schema.split.column] + [f"{n}_path" for n in schema.streams()
                                      if schema.modalities[n].required]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{manifest}: missing required column(s) {missing}; the manifest has "
                         f"{list(table.columns)}")
    return list(zip((int(n) for n in table.index), table.to_dict("records"), strict=True))


def build(pipeline: beam.Pipeline, manifest: str, schema: PrepareSchema, out: str,
          num_shards: int) -> None:
    """Add the preparation's transforms to ``pipeline`` (see the module docstring).

    A worker reads the manifest (:func:`manifest_rows`) and its rows are spread over the
    workers: the rows are not embedded in the job graph, whose size runners limit (Dataflow:
    10 MB).
    """
    features = stored_features(schema)
    specs = {n: {"name": n, "kind": s.kind, "shape": list(s.shape), "dtype": s.dtype,
                 "options": s.options} for n, s in schema.modality_specs().items()}
    rows = (pipeline
            | "Manifest" >> beam.Create([manifest])
            | "ReadManifest" >> beam.FlatMap(manifest_rows, schema)
            | "Spread" >> beam.Reshuffle())
    read = rows | "Read" >> beam.ParDo(ReadRow(schema, manifest)).with_outputs(
        ReadRow.QUARANTINE, main="examples")
    _ = (read[ReadRow.QUARANTINE]
         | "AllBad" >> beam.combiners.ToList()
         | "Quarantine" >> beam.Map(_write_quarantine, fs.join(out, "quarantine.csv")))
    _ = (read.examples
         | "WriteParts" >> beam.ParDo(WritePart(fs.join(out, PARTS), features, num_shards))
         | "ByShard" >> beam.GroupByKey()
         | "WriteShards" >> beam.ParDo(WriteShard(out, num_shards))
         | "BySplit" >> beam.GroupByKey()
         | "SplitSchemas" >> beam.Map(_write_split_schema, out, features))
    _ = (read.examples
         | "Train" >> beam.Filter(lambda e: e[0] == "train")
         | "TrainExamples" >> beam.FlatMap(lambda e: e[2])
         | "Fit" >> beam.CombineGlobally(PreprocessingStats(specs)).without_defaults()
         | "Statistics" >> beam.Map(_write_json, fs.join(out, "statistics.json")))


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int] | None:
    """The window counters of a finished run (None if the runner reports no metrics)."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS))["counters"]
    except (NotImplementedError, KeyError):
        return None
    names = ("windows_kept", "windows_dropped_low_presence", "recordings_shorter_than_a_window")
    counts = dict.fromkeys(names, 0)
    for counter in found:
        counts[counter.key.metric.name] += counter.committed or 0
    return counts


def prepare(
    manifest: str | os.PathLike,
    schema: str | os.PathLike | PrepareSchema,
    out: str | os.PathLike,
    pipeline_args: Sequence[str] | None = None,
    num_shards: int = 4,
) -> dict[str, Any]:
    """Run the preparation; returns the ``dataset.json`` it wrote (see the module docstring).

    Args:
        manifest: CSV/Parquet/JSONL manifest (relative paths are relative to its folder).
        schema: a schema YAML path or a :class:`PrepareSchema`.
        out: a new or empty folder.
        pipeline_args: Beam pipeline options (``--runner=...`` and the runner's own);
            default :data:`LOCAL_OPTIONS`.
        num_shards: shards per split (a split with fewer examples gets fewer).

    Raises:
        SchemaError, ValueError: a bad schema or manifest (before the pipeline starts).
        FileExistsError: ``out`` is not empty.
        EmptyDataError: a split has no examples (the quarantine report is still written).
    """
    schema_file = None if isinstance(schema, PrepareSchema) else str(schema)
    schema = schema if isinstance(schema, PrepareSchema) else load_schema(schema)
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    out = fs.abspath(fs.clean(out))
    if fs.isdir(out) and fs.listdir(out):
        raise FileExistsError(f"{out} is not empty; prepare into a new folder")
    fs.makedirs(out)
    manifest = fs.clean(manifest)
    if is_in_ipython():
        return _prepare_in_child(manifest, schema_file or schema, out, pipeline_args, num_shards)
    options = PipelineOptions(list(LOCAL_OPTIONS if pipeline_args is None else pipeline_args))
    pipeline = beam.Pipeline(options=options)
    rows = manifest_rows(manifest, schema)  # checked here, before anything runs
    build(pipeline, manifest, schema, out, num_shards)
    finished = threading.Event()
    watcher = threading.Thread(target=_show_progress,
                               args=(fs.join(out, PARTS), len(rows), finished), daemon=True)
    watcher.start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        finished.set()
        watcher.join()
        fs.rmtree(fs.join(out, PARTS))
    windows = _counters(result) if schema.streams() else None
    quarantine = fs.join(out, "quarantine.csv")
    bad = 0
    if fs.isfile(quarantine):  # csv rows, not lines: a reason may hold a line break
        bad = len(list(csv.reader(io.StringIO(fs.read_text(quarantine))))) - 1
    counts = {}
    for split in SPLITS:
        schema_file = fs.join(out, f"{split}/schema.json")
        counts[split] = json.loads(fs.read_text(schema_file))["num_examples"] if (
            fs.isfile(schema_file)) else 0
    empty = [s for s in SPLITS if not counts[s]]
    if empty:
        raise EmptyDataError(f"{manifest}: split {empty[0]!r} has no examples ({bad} bad "
                             f"row(s) skipped, see {quarantine}): check split.fractions and "
                             "split.assign in the schema, and the manifest")
    stats = json.loads(fs.read_text(fs.join(out, "statistics.json")))
    _write_json(stats["state"], fs.join(out, "preprocessing.json"))
    fs.remove(fs.join(out, "statistics.json"))
    card = {
        "format": "mmkeras-prepared",
        "version": 1,
        "name": schema.name,
        "class_names": schema.class_names(),
        "modalities": {n: {"kind": s.kind, "shape": list(s.shape), "dtype": s.dtype,
                           "options": s.options} for n, s in schema.modality_specs().items()},
        "optional": [n for n, m in schema.modalities.items() if not m.required],
        "num_examples": counts,
        "bad_rows": bad,
        "ranges": stats["ranges"],
        "windows": windows,
        "manifest": fs.abspath(manifest),
        "schema": schema.model_dump(mode="json"),
    }
    _write_json(card, fs.join(out, "dataset.json"))
    return card


def _show_progress(parts: str, rows: int, finished: threading.Event) -> None:
    """A progress bar on a terminal (none otherwise): manifest rows with their part file
    written, polled every second; rows without examples (bad, too short) count at the end."""
    with tqdm(total=rows, desc="prepare: rows", unit="row", disable=None, leave=False) as bar:
        while not finished.wait(1.0):
            if fs.isdir(parts):
                bar.update(len(fs.glob(fs.join(parts, "*/*/*.tfrecord"))) - bar.n)
                if bar.n >= rows:
                    bar.set_description("prepare: writing shards")
        bar.update(rows - bar.n)


def _prepare_in_child(manifest: str, schema: str | PrepareSchema, out: str,
                      pipeline_args: Sequence[str] | None, num_shards: int) -> dict[str, Any]:
    """:func:`prepare` in a child ``python -m mmkeras.prepare``, for Jupyter and IPython.

    There, Beam 2.77 imports its interactive module while the pipeline is built, and that
    module fails with pandas 3 (Beam supports pandas < 2.4). The child's output is relayed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(schema, PrepareSchema):
            path = Path(tmp) / "schema.yaml"
            path.write_text(yaml.safe_dump(schema.model_dump(mode="json"), sort_keys=False))
            schema = str(path)
        args = list(LOCAL_OPTIONS if pipeline_args is None else pipeline_args)
        cmd = [sys.executable, "-m", "mmkeras.prepare", "--manifest", manifest, "--schema",
               schema, "--out", out, "--num-shards", str(num_shards), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.stdout:
        print(done.stdout, end="")
    if done.returncode == 1 and done.stderr.strip():  # the command's one-line data error
        raise ValueError(done.stderr.strip().splitlines()[-1])
    if done.returncode:
        raise RuntimeError(f"python -m mmkeras.prepare exited with {done.returncode}:\n"
                           + "\n".join(done.stderr.strip().splitlines()[-20:]))
    return json.loads(fs.read_text(fs.join(out, "dataset.json")))
