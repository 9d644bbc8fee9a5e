"""Manifests: one row per example, validated up front, read into ``tf.data``.

A manifest is a table in CSV (``.csv``), Parquet (``.parquet``) or JSON Lines (``.jsonl``),
picked by extension. A :class:`ManifestSchema` maps each field name to a :class:`Field`
(kind, shape, dtype, required); the field's manifest columns follow from its name and kind:

- ``audio``: ``<name>_path``, a WAV (16-bit PCM) or FLAC file -> float32 ``(samples,)``.
- ``image``: ``<name>_path``, a PNG/JPEG/GIF/BMP/WebP file -> uint8 ``(H, W, C)``.
- ``stream``: ``<name>_path`` (CSV/NPY stream file), ``<name>_start_s``, ``<name>_end_s`` (the
  time window) -> float32 ``(T, C)``.
- ``text``: ``<name>``, inline string -> string ``()``.
- ``numeric``: ``<name>`` -> ``()``, or ``<name>_0 .. <name>_{n-1}`` -> ``(n,)``; float32/64.
- ``label``: ``<name>``, one of ``classes`` -> int32/int64 class index; without ``classes`` a
  number (regression target) -> float32/64.

Relative paths are resolved against the manifest's folder. CSV cells are read as text (no
"NA" guessing); in every format a blank cell, ``null`` or a missing key is a missing value.

Validation (:func:`read_manifest`). A required column missing from the manifest raises
ValueError naming the columns and the manifest. Every row is then checked and a bad row is
quarantined (skipped and reported as ``"<manifest>:row N (<file>)"`` with the reason; N is the
0-based row, which is also the index of the returned DataFrame; ``strict=True`` raises
:class:`~mmkeras.data.quarantine.BadRecordError` at the first): missing or unreadable file;
audio that :func:`~mmkeras.data.audio.read_audio` rejects (corrupt, truncated, empty), a
sample rate other than ``sample_rate``, a ``.wav`` that is not 16-bit PCM (the only WAV
encoding ``tf.audio.decode_wav`` reads); an image that does not decode; missing (blank),
non-numeric, NaN or inf values; a label outside ``classes``; a stream file that cannot be
parsed, has the wrong number of channels or non-monotonic timestamps, or a window outside its
recorded span. A row is reported once, for its first problem.

Audio and images are padded/cropped to the schema shape: audio at the end
(:func:`~mmkeras.data.audio.pad_or_crop`), images centred
(``tf.image.resize_with_crop_or_pad``); resize or rescale in the model.

Streams. A stream file holds rows ``t, v_1 .. v_C`` (``t`` in seconds, the clock of the
window columns): ``.npy`` ``[N, 1 + C]``, or ``.csv`` with an optional header line.
Timestamps must be finite and non-decreasing; rows with NaN/inf values are dropped and equal
timestamps averaged (as :func:`~mmkeras.data.align.align`). The window ``[start, end)`` must
lie inside the span of the remaining samples; it becomes ``T`` values at ``start + k (end -
start) / T`` (k = 0 .. T-1) by linear interpolation (``align(method="linear")``), see
:func:`read_stream_window`. In ``tf.data`` this runs in ``tf.numpy_function`` with the 16 most
recently used files kept parsed in memory, so many windows over one recording parse it once.

Optional fields (``required=False``) follow the missing-modality convention of
:func:`mmkeras.data.impute.presence`: their columns may be absent from the manifest and an empty
cell (all cells, for numeric vectors) means the modality is absent for that example; the dataset
then gives zeros ("" for text) and ``<name>_present`` = ``[0.0]`` (``[1.0]`` when present). A
value that is there but bad is still quarantined. Labels are always required.

Example:
    >>> schema = ManifestSchema({
    ...     "speech": Field("audio", shape=(8000,), sample_rate=8000),
    ...     "digit": Field("image", shape=(28, 28, 1)),
    ...     "caption": Field("text"),
    ...     "age": Field("numeric", required=False),
    ...     "accel": Field("stream", shape=(50, 3)),
    ...     "label": Field("label", classes=tuple(range(10))),
    ... })
    >>> schema.columns()[:4]
    ['speech_path', 'digit_path', 'caption', 'age']

    Then, with a manifest file::

        df, quarantine = read_manifest("train.csv", schema)
        ds = manifest_dataset(df, schema, batch_size=32, shuffle=True)
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from mmkeras.data import fs
from mmkeras.data.align import align
from mmkeras.data.audio import decode_wav, pad_or_crop, read_audio
from mmkeras.data.image import decode_image
from mmkeras.data.quarantine import Quarantine

__all__ = [
    "KINDS",
    "Field",
    "ManifestSchema",
    "manifest_dataset",
    "open_manifest",
    "read_manifest",
    "read_stream",
    "read_stream_window",
    "validate_row",
]

KINDS = ("audio", "image", "stream", "text", "numeric", "label")
FILE_KINDS = ("audio", "image", "stream")
_DTYPES = {
    "audio": ("float32",),
    "image": ("uint8",),
    "stream": ("float32",),
    "text": ("string",),
    "numeric": ("float32", "float64"),
    "label": ("int32", "int64"),  # with classes
    "target": ("float32", "float64"),  # label without classes
}
_STREAM_CACHE_FILES = 16


@dataclass(frozen=True)
class Field:
    """One field of a manifest: what its column(s) hold and the tensor they become.

    Args:
        kind: one of ``KINDS`` (see the module docstring for the columns of each kind).
        shape: per-example tensor shape: ``(samples,)`` audio, ``(H, W, C)`` image (C = 1, 3
            or 4), ``(T, C)`` stream, ``()`` or ``(n,)`` numeric, ``()`` text and label.
        dtype: tensor dtype; None takes the first allowed one for the kind.
        required: False lets the columns be absent and cells be empty (``<name>_present``).
        sample_rate: audio only, required: the files' native rate in Hz.
        classes: label only: the label set; labels become indices into it.

    Example:
        >>> Field("audio", shape=(8000,), sample_rate=8000).columns("speech")
        ['speech_path']
    """

    kind: str
    shape: tuple[int, ...] = ()
    dtype: str | None = None
    required: bool = True
    sample_rate: int | None = None
    classes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field kind {self.kind!r} is not one of {KINDS}")
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        ranks = {"audio": (1,), "image": (3,), "stream": (2,), "numeric": (0, 1)}
        if len(shape) not in ranks.get(self.kind, (0,)) or any(s < 1 for s in shape):
            raise ValueError(f"{self.kind} field: invalid shape {shape} (see Field's docstring)")
        if self.kind == "image" and shape[2] not in (1, 3, 4):
            raise ValueError(f"image field: channels must be 1, 3 or 4, got shape {shape}")
        if (self.kind == "audio") != (self.sample_rate is not None):
            raise ValueError("sample_rate is required for audio fields and only for them")
        if self.classes is not None:
            if self.kind != "label":
                raise ValueError(f"classes only apply to label fields, not {self.kind!r}")
            classes = tuple(self.classes)
            if not classes or len({_label_key(c) for c in classes}) != len(classes):
                raise ValueError(f"label classes must be non-empty and distinct, got {classes}")
            object.__setattr__(self, "classes", classes)
        if self.kind == "label" and not self.required:
            raise ValueError("label fields are always required")
        allowed = _DTYPES["target" if self.kind == "label" and not self.classes else self.kind]
        dtype = allowed[0] if self.dtype is None else self.dtype
        if dtype not in allowed:
            raise ValueError(f"{self.kind} field: dtype {dtype!r} is not one of {allowed}")
        object.__setattr__(self, "dtype", dtype)

    def columns(self, name: str) -> list[str]:
        """The manifest columns of this field when it is called ``name``."""
        if self.kind == "stream":
            return [f"{name}_path", f"{name}_start_s", f"{name}_end_s"]
        if self.kind in FILE_KINDS:
            return [f"{name}_path"]
        if self.kind == "numeric" and self.shape:
            return [f"{name}_{i}" for i in range(self.shape[0])]
        return [name]


@dataclass(frozen=True)
class ManifestSchema:
    """Field name -> :class:`Field`; at least one label field.

    The dataset yields ``({name: tensor} for the other fields (plus ``<name>_present`` for
    optional ones), label)``; the label is a dict by name when there are several.

    Example:
        >>> ManifestSchema.from_dict({"y": {"kind": "label", "classes": ["no", "yes"]}}).labels()
        ['y']
    """

    fields: dict[str, Field]

    def __post_init__(self) -> None:
        if not self.labels():
            raise ValueError("a manifest schema needs at least one field of kind 'label'")
        columns = self.columns()
        inputs = [*self.fields, *(f"{n}_present" for n, f in self.fields.items() if not f.required)]
        clashes = {c for c in columns if columns.count(c) > 1}
        clashes |= {c for c in inputs if inputs.count(c) > 1}
        if clashes:
            raise ValueError(f"schema field names clash on columns/inputs {sorted(clashes)}")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> ManifestSchema:
        """Build from plain data (e.g. YAML): ``{name: {kind: ..., shape: [...], ...}}``."""
        return cls({name: Field(**dict(f)) for name, f in spec.items()})

    def labels(self) -> list[str]:
        """Names of the label fields."""
        return [name for name, f in self.fields.items() if f.kind == "label"]

    def columns(self) -> list[str]:
        """All manifest columns the schema reads, in field order."""
        return [c for name, f in self.fields.items() for c in f.columns(name)]


class _BadRow(Exception):
    def __init__(self, reason: str, file: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.file = reason, file


def read_manifest(
    path: str | os.PathLike, schema: ManifestSchema, strict: bool = False
) -> tuple[pd.DataFrame, Quarantine]:
    """Read and validate a manifest -> (DataFrame of the valid rows, Quarantine of the others).

    The DataFrame keeps the manifest's row numbers as index and all its columns, with the
    schema's columns normalised: absolute file paths, floats for numbers and windows, labels
    as the matching element of ``classes``; absent optional values are None/NaN.

    Raises:
        ValueError: unknown extension, unreadable table, or required columns missing (named).
        BadRecordError: with ``strict=True``, at the first bad row.

    Example:
        df, q = read_manifest("data/train.jsonl", schema)
        print(q.summary())
    """
    path = fs.clean(path)
    table, fields = open_manifest(path, schema)
    quarantine = Quarantine(strict=strict)
    rows: dict[int, dict[str, Any]] = {}
    for n, row in zip(table.index, table.to_dict("records"), strict=True):
        values, bad = validate_row(path, n, row, fields)
        if bad is not None:
            quarantine.add(*bad)
        else:
            rows[n] = values
    out = table.loc[list(rows)].copy()
    for name, f in fields.items():
        for c in f.columns(name):
            is_float = f.kind == "numeric" or (f.kind == "label" and f.classes is None)
            is_float = is_float or (f.kind == "stream" and c != f"{name}_path")
            values = [rows[n][c] for n in rows]
            out[c] = pd.Series(values, index=out.index, dtype="float64" if is_float else object)
    return out, quarantine


def open_manifest(
    path: str | os.PathLike, schema: ManifestSchema
) -> tuple[pd.DataFrame, dict[str, Field]]:
    """Read a manifest table and check its columns -> (table as read, the fields it has).

    Raises:
        ValueError: unknown extension, unreadable table, required columns missing (named), or
            an optional field with only some of its columns.
    """
    path = fs.clean(path)
    table = _read_table(path)
    missing = [
        c for name, f in schema.fields.items() if f.required for c in f.columns(name)
        if c not in table.columns
    ]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; the manifest has {list(table.columns)}"
        )
    for name, f in schema.fields.items():
        have = [c in table.columns for c in f.columns(name)]
        if any(have) and not all(have):
            raise ValueError(f"{path}: optional field {name!r} needs all of {f.columns(name)}")
    return table, {n: f for n, f in schema.fields.items() if f.columns(n)[0] in table.columns}


def validate_row(
    path: str | os.PathLike, n: int, row: Mapping[str, Any], fields: Mapping[str, Field]
) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """Check row ``n`` of manifest ``path`` -> ``(normalised values, None)`` or ``(None, (record,
    reason))``, exactly as :func:`read_manifest` reports it (``fields``: :func:`open_manifest`).

    Example:
        table, fields = open_manifest("train.csv", schema)
        values, bad = validate_row("train.csv", 0, table.iloc[0].to_dict(), fields)
    """
    path = fs.clean(path)
    base = fs.parent(path)
    try:
        return {c: v for name, f in fields.items() for c, v in _check(name, f, row, base)}, None
    except _BadRow as bad:
        where = f" ({bad.file})" if bad.file else ""
        return None, (f"{path}:row {n}{where}", bad.reason)


def manifest_dataset(
    df: pd.DataFrame,
    schema: ManifestSchema,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched, prefetched ``tf.data.Dataset`` of ``({name: tensor}, label)`` from a manifest.

    ``df`` is :func:`read_manifest`'s DataFrame. Files are read and decoded inside ``map``
    (AUTOTUNE parallelism): ``.wav`` with ``tf.audio.decode_wav``, other audio (FLAC) and
    streams in ``tf.numpy_function``, images with :func:`mmkeras.data.image.decode_image`
    (JPEG pixel-equal to PIL). ``shuffle`` reshuffles the rows every epoch (before decoding, so
    only paths sit in the buffer).

    Example:
        ds = manifest_dataset(df, schema, batch_size=32)
        inputs, label = next(iter(ds))
    """
    missing = [
        c for name, f in schema.fields.items() if f.required for c in f.columns(name)
        if c not in df.columns
    ]
    if missing:
        raise ValueError(f"manifest DataFrame lacks required column(s) {missing}")
    if df.empty:
        raise ValueError("manifest DataFrame has no rows (were they all quarantined?)")
    slices = {name: _slices(name, f, df) for name, f in schema.fields.items()}
    labels = schema.labels()
    features = {n: f for n, f in schema.fields.items() if f.kind != "label"}

    def load(row: dict[str, dict[str, tf.Tensor]]) -> tuple[dict[str, tf.Tensor], Any]:
        inputs = {}
        for name, f in features.items():
            inputs[name] = _load(f, row[name])
            if not f.required:
                inputs[f"{name}_present"] = row[name]["present"]
        y = {name: row[name]["value"] for name in labels}
        return inputs, y[labels[0]] if len(labels) == 1 else y

    ds = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle:
        ds = ds.shuffle(len(df), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def read_stream(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a stream file -> (timestamps float64 ``[N]`` s, values float64 ``[N, C]``).

    ``.npy``: a float ``[N, 1 + C]`` array. ``.csv``: rows ``t, v_1 .. v_C``, with an optional
    header line (skipped when a cell of the first line is not a number); empty cells are NaN.

    Raises:
        ValueError: naming the file, if it cannot be parsed, has fewer than 2 columns or no
            rows, or its timestamps are not finite and non-decreasing.

    Example:
        t, values = read_stream("sensors/run1/accel.csv")
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".csv", ".npy"):
        raise ValueError(f"{path}: bad stream: unsupported file type {suffix!r}; use .csv or .npy")
    try:
        raw = io.BytesIO(fs.read_bytes(path))
        if suffix == ".npy":
            if not raw.getvalue().startswith(b"\x93NUMPY"):
                raise ValueError("not a .npy file (no NumPy header); save it with numpy.save")
            data = np.load(raw, allow_pickle=False)
        else:
            cells = pd.read_csv(raw, header=None, dtype=str, keep_default_na=False).to_numpy()
            header = bool(cells.size) and not all(_is_float(c) for c in cells[0])
            cells = cells[int(header):]
            data = np.where(cells == "", "nan", cells)
            try:
                data = np.asarray(data, dtype=np.float64)
            except ValueError:  # name the first cell that is not a number
                bad = next(((i, j) for i, line in enumerate(cells)
                            for j, c in enumerate(line) if c != "" and not _is_float(c)), None)
                if bad is None:
                    raise
                raise ValueError(f"line {bad[0] + 1 + header}, column {bad[1] + 1}: "
                                 f"{cells[bad]!r} is not a number") from None
        data = np.asarray(data, dtype=np.float64)
    except (ValueError, TypeError, EOFError) as err:
        raise ValueError(f"{path}: bad stream: cannot parse: {err}") from err
    if data.ndim != 2 or data.shape[1] < 2 or data.shape[0] == 0:
        raise ValueError(
            f"{path}: bad stream: expected rows of 't, values...' (>= 1 row, >= 2 columns), "
            f"got shape {data.shape}"
        )
    t = data[:, 0]
    if not np.isfinite(t).all():
        raise ValueError(
            f"{path}: bad stream: non-finite timestamp in row {np.flatnonzero(~np.isfinite(t))[0]}"
        )
    back = np.flatnonzero(t[1:] < t[:-1])
    if back.size:
        i = int(back[0])
        raise ValueError(
            f"{path}: non-monotonic timestamps: row {i + 1} (t={t[i + 1]:g} s) comes after row "
            f"{i} (t={t[i]:g} s); sort the stream by time"
        )
    return t, data[:, 1:]


def read_stream_window(
    path: str | os.PathLike, start: float, end: float, length: int
) -> np.ndarray:
    """Window ``[start, end)`` of a stream file as float32 ``[length, C]``.

    Values at ``start + k (end - start) / length`` (k = 0 .. length-1), linearly interpolated
    with ``align(method="linear")`` after dropping rows with NaN/inf values and averaging equal
    timestamps. Recently used files stay parsed (keyed by path, mtime and size).

    Raises:
        ValueError: naming the file, if :func:`read_stream` fails, ``start >= end``, or the
            window is not inside ``[t_first, t_last]`` of the finite samples.

    Example:
        read_stream_window("accel.csv", 1.0, 3.0, 100).shape
        (100, 3)
    """
    path = os.fspath(path)
    size, mtime_ns = fs.stat(path)
    t, x = _finite_stream(path, mtime_ns, size)
    if not start < end:
        raise ValueError(
            f"{path}: bad stream window: start {start:g} s is not before end {end:g} s"
        )
    if t.size == 0 or start < t[0] or end > t[-1]:
        span = f"[{t[0]:g}, {t[-1]:g}] s" if t.size else "no finite samples"
        raise ValueError(
            f"{path}: stream window outside the stream: [{start:g}, {end:g}) s is not inside "
            f"the recorded span ({span})"
        )
    # Only the samples bracketing the window (whole groups of equal timestamps) matter.
    lo = np.searchsorted(t, t[np.searchsorted(t, start, side="right") - 1], side="left")
    hi = np.searchsorted(t, t[np.searchsorted(t, end, side="left")], side="right")
    grid = start + (end - start) * np.arange(length) / length
    return align(t[lo:hi], x[lo:hi], grid, method="linear").values.astype(np.float32)


@functools.lru_cache(maxsize=_STREAM_CACHE_FILES)
def _finite_stream(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_stream` without rows holding NaN/inf values (cached per file version)."""
    t, x = read_stream(path)
    keep = np.isfinite(x).all(axis=1)
    return t[keep], x[keep]


def _read_table(path: str) -> pd.DataFrame:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".csv", ".parquet", ".jsonl"):
        raise ValueError(f"{path}: unknown manifest type {suffix!r}; use .csv, .parquet or .jsonl")
    raw = fs.read_bytes(path)
    if suffix == ".parquet":
        try:
            return pd.read_parquet(io.BytesIO(raw), dtype_backend="pyarrow")
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a readable Parquet file: {err}") from None
    text = fs.utf8_text(raw, path, "save the manifest as UTF-8")
    if suffix == ".csv":
        if not text.strip():
            raise ValueError(f"{path}: empty manifest: it needs a header line naming the columns")
        header = next(csv.reader(io.StringIO(text, newline="")), [])
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ValueError(f"{path}: column(s) {repeated} appear more than once in the header; "
                             "keep one of each")
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (ValueError, csv.Error) as err:  # pandas' ParserError is a ValueError
            raise ValueError(f"{path}: not a readable CSV file: "
                             f"{' '.join(str(err).split())}") from None
    records = []
    with io.StringIO(text, newline=None) as f:  # universal newlines, as open()
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON: {err}") from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line")
            records.append(record)
    keys = dict.fromkeys(k for record in records for k in record)  # a missing key is None
    return pd.DataFrame([{k: r.get(k) for k in keys} for r in records], dtype=object)


def _check(name: str, f: Field, row: dict[str, Any], base: str) -> list[tuple[str, Any]]:
    """Validate one field of one row -> normalised ``(column, value)`` pairs; raise _BadRow."""
    cols = f.columns(name)
    absent_if_empty = cols[:1] if f.kind in FILE_KINDS else cols
    if not f.required and all(_missing(row[c]) for c in absent_if_empty):
        return [(c, None) for c in cols]
    if f.kind == "numeric":
        return [(c, _number(c, row[c])) for c in cols]
    if f.kind == "text":
        if _missing(row[name]):
            raise _BadRow(f"missing value: column {name!r} is empty")
        return [(name, str(row[name]))]
    if f.kind == "label":
        if f.classes is None:
            return [(name, _number(name, row[name]))]
        if _missing(row[name]):
            raise _BadRow(f"missing value: label column {name!r} is empty")
        match = [c for c in f.classes if _label_key(c) == _label_key(row[name])]
        if not match:
            value = _label_key(row[name])
            raise _BadRow(f"unknown label: {name}={value!r} not in {list(f.classes)}")
        return [(name, match[0])]
    if _missing(row[cols[0]]):
        raise _BadRow(f"missing value: column {cols[0]!r} is empty")
    file = fs.join(base, str(row[cols[0]]))
    if not fs.isfile(file):
        raise _BadRow(f"missing file: {cols[0]} does not exist", file)
    try:
        if f.kind == "audio":
            _check_audio(file, f)
            return [(cols[0], file)]
        if f.kind == "image":
            _check_image(file, f)
            return [(cols[0], file)]
        start, end = _number(cols[1], row[cols[1]]), _number(cols[2], row[cols[2]])
        channels = read_stream_window(file, start, end, f.shape[0]).shape[1]
        if channels != f.shape[1]:
            raise _BadRow(f"bad stream: {channels} value column(s), expected {f.shape[1]}", file)
        return [(cols[0], file), (cols[1], start), (cols[2], end)]
    except OSError as err:
        raise _BadRow(f"unreadable file: {err.strerror or err}", file) from err
    except ValueError as err:
        raise _BadRow(str(err).removeprefix(f"{file}: "), file) from err
    except _BadRow as bad:
        bad.file = file
        raise


def _check_audio(file: str, f: Field) -> None:
    import soundfile as sf

    try:
        _, rate = read_audio(file)
    except ValueError as err:
        raise _BadRow(f"bad audio: {str(err).removeprefix(f'{file}: ')}") from err
    if rate != f.sample_rate:
        raise _BadRow(f"wrong sample rate: {rate} Hz, expected {f.sample_rate} Hz")
    if file.lower().endswith(".wav"):
        with fs.open_file(file, "rb") as fh:  # the header only
            info = sf.info(fh)
        if (info.format, info.subtype) != ("WAV", "PCM_16"):
            raise _BadRow(
                f"unsupported WAV encoding: {info.format}/{info.subtype}; tf.audio.decode_wav "
                "reads 16-bit PCM only (convert the file, e.g. to FLAC)"
            )


def _check_image(file: str, f: Field) -> None:
    try:
        decode_image(tf.io.read_file(file), f.shape[2])
    except tf.errors.OpError as err:
        message = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", "", err.message, flags=re.S)
        raise _BadRow(f"bad image: {message}") from err


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, str) and not value.strip())


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(column: str, value: Any) -> float:
    if _missing(value):
        raise _BadRow(f"missing value: column {column!r} is empty")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _BadRow(f"not a number: column {column!r} holds {value!r}") from None
    if not math.isfinite(number):
        raise _BadRow(f"non-finite value: column {column!r} is {number}")
    return number


def _label_key(value: Any) -> str:
    """Compare labels across formats: 3, 3.0 and "3" are the same label."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _slices(name: str, f: Field, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-row arrays of one field for ``from_tensor_slices`` (absent values filled)."""
    cols = f.columns(name)
    if not all(c in df.columns for c in cols):  # optional field absent from the manifest
        frame = pd.DataFrame({c: [None] * len(df) for c in cols}, index=df.index, dtype=object)
    else:
        frame = df[cols]
    present = frame.notna().all(axis=1).to_numpy()
    out: dict[str, np.ndarray] = {}
    if f.kind == "label" and f.classes is not None:
        index = {_label_key(c): i for i, c in enumerate(f.classes)}
        out["value"] = np.array([index[_label_key(v)] for v in frame[name]], dtype=f.dtype)
    elif f.kind in ("numeric", "label"):
        values = frame.astype("float64").fillna(0.0).to_numpy(dtype=f.dtype)
        out["value"] = values if f.shape else values[:, 0]
    else:  # a path or a text: strings
        out["value"] = frame[cols[0]].where(present, "").astype(str).to_numpy(dtype=str)
    if f.kind == "stream":
        out["start"] = frame[cols[1]].astype("float64").fillna(0.0).to_numpy()
        out["end"] = frame[cols[2]].astype("float64").fillna(0.0).to_numpy()
    if not f.required:
        out["present"] = present.astype(np.float32)[:, None]
    return out


def _load(f: Field, row: dict[str, tf.Tensor]) -> tf.Tensor:
    """Read/decode one field of one row in the graph (zeros when an optional one is absent)."""
    if f.kind in ("text", "numeric"):
        return row["value"]
    if f.kind == "audio":

        def read() -> tf.Tensor:
            path = row["value"]
            is_wav = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.wav")
            audio = tf.cond(
                is_wav,
                lambda: decode_wav(tf.io.read_file(path))[0],
                lambda: tf.numpy_function(_read_audio_np, [path], tf.float32, stateful=False),
            )
            return pad_or_crop(tf.ensure_shape(audio, [None]), f.shape[0])

    elif f.kind == "image":

        def read() -> tf.Tensor:
            image = decode_image(tf.io.read_file(row["value"]), f.shape[2])
            return tf.image.resize_with_crop_or_pad(image, f.shape[0], f.shape[1])

    else:  # stream

        def read() -> tf.Tensor:
            args = [row["value"], row["start"], row["end"], f.shape[0]]
            return tf.numpy_function(_read_window_np, args, tf.float32, stateful=False)

    if f.required:
        return tf.ensure_shape(read(), f.shape)
    zeros = tf.zeros(f.shape, tf.as_dtype(f.dtype))
    return tf.ensure_shape(tf.cond(row["present"][0] > 0, read, lambda: zeros), f.shape)


def _read_audio_np(path: bytes) -> np.ndarray:
    return read_audio(path.decode())[0]


def _read_window_np(path: bytes, start: float, end: float, length: int) -> np.ndarray:
    return read_stream_window(path.decode(), float(start), float(end), int(length))
