"""Sharded, compressed TFRecord datasets with a JSON schema, read back exactly.

:func:`write_tfrecords` writes ``examples`` (a dict of arrays, one row per example) into
``out_dir``::

    part-00000-of-00004.tfrecord.gz   one tf.train.Example per row; row i -> shard i % 4
    ...
    part-00003-of-00004.tfrecord.gz   (".tfrecord.zz" for ZLIB, ".tfrecord" uncompressed)
    schema.json                       written last

``schema.json`` holds ``compression``, ``num_examples``, ``features`` (name -> ``dtype``,
``shape`` per example) and ``shards`` (``file``, ``num_examples``, ``num_bytes``, ``sha256``).

Encoding. Numeric features (bool, int8-64, uint8-64, float16/32/64) are stored as one
``bytes_list`` entry holding the row's raw little-endian bytes (C order), so every value, NaN
payloads and -0.0 included, comes back bit-identical, which a ``float_list`` cannot promise for
float64. Without mmkeras: ``np.frombuffer(value, "<f4").reshape(shape)``. Strings (``dtype``
``"string"``, stored UTF-8) and bytes (``"bytes"``) are ``bytes_list`` entries, one per element
(C order); both come back as ``tf.string``.

:func:`read_tfrecords` checks the shards against the schema (present, size, sha256), reads them
with a parallel ``interleave`` and parses rows back to the written dtypes and shapes. Because of
the round-robin assignment, reading with ``cycle_length >= num_shards`` (the default),
``deterministic=True`` and no file shuffling returns the rows in the order they were written.

Example:
    out = write_tfrecords({"x": np.ones((10, 3), "float32"), "y": np.arange(10)},
                              "/tmp/ds", num_shards=2)
    next(iter(read_tfrecords(out, batch_size=4)))["x"].shape
    TensorShape([4, 3])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from mmkeras.data import fs
from mmkeras.data.download import sha256_file

__all__ = [
    "SCHEMA_FILE", "read_tfrecords", "serialize_example", "shard_name", "write_schema",
    "write_tfrecords",
]

SCHEMA_FILE = "schema.json"
FORMAT = "mmkeras-tfrecord"
_SUFFIXES = {"GZIP": ".tfrecord.gz", "ZLIB": ".tfrecord.zz", "": ".tfrecord"}
_NUMERIC = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)
# tf.io.decode_raw has no uint32/uint64 output: decode as the signed type, then bitcast.
_RAW_AS = {"uint32": "int32", "uint64": "int64"}


def write_tfrecords(
    examples: dict[str, np.ndarray],
    out_dir: str | os.PathLike,
    num_shards: int,
    compression: str = "GZIP",
    progress: bool = True,
) -> Path:
    """Write examples into ``num_shards`` TFRecord shards plus ``schema.json``; return out_dir.

    Args:
        examples: feature name -> array whose first axis is the example; numeric arrays of
            any fixed per-example shape, or str/bytes arrays (``U``, ``S`` or object dtype).
        out_dir: a new or empty folder.
        num_shards: 1 .. number of examples; row i goes to shard ``i % num_shards``.
        compression: ``"GZIP"``, ``"ZLIB"`` or ``""`` (none).
        progress: show a progress bar (one step per example).

    Raises:
        ValueError: unsupported dtype, rows of unequal count, bad ``num_shards`` or
            ``compression``.
        FileExistsError: ``out_dir`` is not empty.

    Example:
        write_tfrecords({"audio": waves, "label": labels}, "out/train", 8)
    """
    if compression not in _SUFFIXES:
        raise ValueError(f"compression must be one of {list(_SUFFIXES)}, got {compression!r}")
    if not examples:
        raise ValueError("examples is empty: pass at least one feature")
    arrays = {name: np.asarray(values) for name, values in examples.items()}
    counts = {name: (len(a) if a.ndim else None) for name, a in arrays.items()}
    if len(set(counts.values())) != 1 or None in counts.values():
        raise ValueError(f"every feature needs the same number of rows (axis 0), got {counts}")
    n = next(iter(counts.values()))
    if not 1 <= num_shards <= max(n, 1):
        raise ValueError(f"num_shards must be in [1, {max(n, 1)}] (rows), got {num_shards}")
    features = {name: _feature_spec(name, a) for name, a in arrays.items()}
    for name, spec in features.items():
        if spec["dtype"] in _NUMERIC:  # little-endian once: each row's bytes are then the format
            little = np.dtype(spec["dtype"]).newbyteorder("<")
            arrays[name] = np.ascontiguousarray(arrays[name], little)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; write TFRecords into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    options = tf.io.TFRecordOptions(compression_type=compression)
    shards = []
    with tqdm(total=n, unit="ex", desc=f"writing {out_dir.name}", disable=not progress) as bar:
        for shard in range(num_shards):
            path = out_dir / shard_name(shard, num_shards, compression)
            rows = range(shard, n, num_shards)
            with tf.io.TFRecordWriter(str(path), options) as writer:
                for i in rows:
                    writer.write(_example(arrays, features, i))
                    bar.update()
            shards.append({
                "file": path.name,
                "num_examples": len(rows),
                "num_bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            })
    write_schema(out_dir, features, compression, shards)
    return out_dir


def shard_name(shard: int, num_shards: int, compression: str = "GZIP") -> str:
    """File name of shard ``shard`` of ``num_shards``: ``part-00000-of-00004.tfrecord.gz``."""
    return f"part-{shard:05d}-of-{num_shards:05d}{_SUFFIXES[compression]}"


def write_schema(
    out_dir: str | os.PathLike,
    features: dict[str, dict[str, Any]],
    compression: str,
    shards: list[dict[str, Any]],
) -> str:
    """Write ``schema.json`` (last, atomically) for shards written elsewhere, e.g. by Beam.

    ``features``: name -> ``{"dtype", "shape"}``; ``shards``: ``{"file", "num_examples",
    "num_bytes", "sha256"}`` each, in shard order. Returns the schema path.
    """
    out_dir = fs.clean(out_dir)
    schema = {
        "format": FORMAT,
        "version": 1,
        "compression": compression,
        "num_examples": sum(s["num_examples"] for s in shards),
        "features": features,
        "shards": shards,
    }
    path = fs.join(out_dir, SCHEMA_FILE)
    fs.write_text(path, json.dumps(schema, indent=2) + "\n")
    return path


def serialize_example(row: dict[str, Any], features: dict[str, dict[str, Any]]) -> bytes:
    """One example (feature -> value of the schema's per-example shape) as the shards store it.

    Example:
        >>> spec = {"x": {"dtype": "float32", "shape": [2]}, "s": {"dtype": "string", "shape": []}}
        >>> len(serialize_example({"x": np.zeros(2, "float32"), "s": "a"}, spec)) > 0
        True
    """
    arrays = {}
    for name, f in features.items():
        dtype = object if _is_text(f) else np.dtype(f["dtype"]).newbyteorder("<")
        value = np.asarray(row[name], dtype=dtype)
        if list(value.shape) != list(f["shape"]):
            raise ValueError(f"feature {name!r}: shape {list(value.shape)}, the schema says "
                             f"{f['shape']}")
        arrays[name] = value[None]
    return _example(arrays, features, 0)


def read_tfrecords(
    out_dir: str | os.PathLike,
    batch_size: int | None = None,
    shuffle_files: bool = False,
    cycle_length: int | None = None,
    deterministic: bool = True,
    seed: int | None = None,
    verify: bool = True,
) -> tf.data.Dataset:
    """``tf.data.Dataset`` of ``{feature: tensor}`` from a :func:`write_tfrecords` folder.

    Args:
        out_dir: the folder holding ``schema.json`` and the shards.
        batch_size: batch the rows (the last batch may be smaller); None yields single rows.
        shuffle_files: shuffle the shard order every epoch (``seed``).
        cycle_length: shards read concurrently by ``interleave``; None = all of them.
        deterministic: keep the interleave order fixed despite parallel reads.
        seed: seed of the shard shuffle.
        verify: also check each shard's sha256 (reads every shard once; sizes are always
            checked). Without it a corrupt shard fails later with TensorFlow's own message,
            which does not name the shard.

    Raises:
        FileNotFoundError: ``schema.json`` or a shard is missing (named).
        ValueError: a shard is truncated or corrupt (named), or the schema is not ours.

    Example:
        ds = read_tfrecords("out/train", batch_size=32, shuffle_files=True)
    """
    out_dir = fs.clean(out_dir)
    schema = _load_schema(out_dir)
    files = []
    for shard in schema["shards"]:
        path = fs.join(out_dir, shard["file"])
        if not fs.isfile(path):
            raise FileNotFoundError(f"shard {path} listed in {SCHEMA_FILE} is missing")
        size = fs.stat(path)[0]
        if size != shard["num_bytes"]:
            state = "truncated" if size < shard["num_bytes"] else "corrupt"
            raise ValueError(
                f"shard {path} is {state}: {size} bytes, {SCHEMA_FILE} records "
                f"{shard['num_bytes']}; rewrite the dataset"
            )
        if verify and sha256_file(path) != shard["sha256"]:
            raise ValueError(
                f"shard {path} is corrupt: its sha256 differs from {SCHEMA_FILE}; rewrite the "
                "dataset"
            )
        files.append(path)
    compression = schema["compression"]
    features = schema["features"]

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=cycle_length or len(files),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(schema["num_examples"]))
    if batch_size:
        ds = ds.batch(batch_size)
    spec = {
        name: tf.io.FixedLenFeature(f["shape"] if _is_text(f) else [], tf.string)
        for name, f in features.items()
    }

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        if batch_size:
            parsed, leading = tf.io.parse_example(serialized, spec), [-1]
        else:
            parsed, leading = tf.io.parse_single_example(serialized, spec), []
        out = {}
        for name, f in features.items():
            if _is_text(f):
                out[name] = parsed[name]
                continue
            dtype = f["dtype"]
            raw = tf.io.decode_raw(parsed[name], tf.as_dtype(_RAW_AS.get(dtype, dtype)))
            if dtype in _RAW_AS:
                raw = tf.bitcast(raw, tf.as_dtype(dtype))
            out[name] = tf.reshape(raw, leading + list(f["shape"]))
        return out

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _feature_spec(name: str, array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape"}`` of one feature; rejects what cannot round-trip exactly."""
    shape = list(array.shape[1:])
    kind = array.dtype.kind
    if kind == "U":
        return {"dtype": "string", "shape": shape}
    if kind == "S":
        return {"dtype": "bytes", "shape": shape}
    if kind == "O":
        types = {type(v) for v in array.ravel()}
        if types <= {str}:
            return {"dtype": "string", "shape": shape}
        if types <= {bytes}:
            return {"dtype": "bytes", "shape": shape}
        raise ValueError(f"feature {name!r}: object arrays must hold only str or only bytes")
    if array.dtype.name not in _NUMERIC:
        raise ValueError(
            f"feature {name!r}: dtype {array.dtype} is not supported; use one of {_NUMERIC}, "
            "str or bytes"
        )
    return {"dtype": array.dtype.name, "shape": shape}


def _is_text(feature: dict[str, Any]) -> bool:
    return feature["dtype"] in ("string", "bytes")


def _example(arrays: dict[str, np.ndarray], features: dict[str, Any], i: int) -> bytes:
    out = {}
    for name, array in arrays.items():
        if _is_text(features[name]):
            values = [v.encode() if isinstance(v, str) else bytes(v) for v in np.ravel(array[i])]
        else:
            values = [array[i].tobytes()]
        out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    example = tf.train.Example(features=tf.train.Features(feature=out))
    return example.SerializeToString(deterministic=True)  # map order fixed: same bytes


def _load_schema(out_dir: str) -> dict[str, Any]:
    path = fs.join(out_dir, SCHEMA_FILE)
    if not fs.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {out_dir} is not a write_tfrecords folder, or its writing did "
            "not finish (schema.json is written last)"
        )
    schema = json.loads(fs.read_text(path))
    if schema.get("format") != FORMAT or schema.get("version") != 1:
        raise ValueError(f"{path}: not a {FORMAT} v1 schema (format/version fields)")
    return schema
