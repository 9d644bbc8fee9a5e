"""Tests for mmkeras.data.tfrecord: exact round trips over shards, interleave, damaged shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data.tfrecord import SCHEMA_FILE, read_tfrecords, write_tfrecords

N = 23  # not a multiple of the shard count


def make_examples(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=(n, 3, 4)).astype(np.float32)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, np.finfo(np.float32).max])
    f32[0, 0, :4], f32[1, 0, :2] = special[:4], special[4:]
    f32.view(np.uint32)[2, 0, 0] = 0x7FC01234  # a NaN with a payload
    words = ["", "zwölf", "🎙️ audio", "a\x00b", "NA"]
    return {
        "id": np.arange(n, dtype=np.int64),
        "wave": f32,
        "f64": rng.normal(size=n) * 1e300,
        "f16": rng.normal(size=(n, 2)).astype(np.float16),
        "i64": rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (n, 2), np.int64),
        "i32": rng.integers(-(2**31), 2**31 - 1, n, np.int32),
        "u64": rng.integers(0, np.iinfo(np.uint64).max, n, np.uint64, endpoint=True),
        "u32": rng.integers(0, 2**32 - 1, (n, 1), np.uint32),
        "image": rng.integers(0, 256, (n, 4, 5, 3), np.uint8),
        "flag": rng.random(n) > 0.5,
        "text": np.array([words[i % len(words)] + str(i) for i in range(n)]),
        "pair": np.array([[f"l{i}", f"r{i}"] for i in range(n)]),
        "blob": np.array([bytes([i, 0, 255]) * (i % 3) for i in range(n)], dtype=object),
    }


def stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def assert_exact(got: dict[str, np.ndarray], examples: dict[str, np.ndarray]) -> None:
    assert set(got) == set(examples)
    for name, expected in examples.items():
        actual = got[name]
        if expected.dtype.kind in "UO":
            expected = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v,
                                    otypes=[object])(expected)
            assert actual.shape == expected.shape and actual.tolist() == expected.tolist(), name
        else:
            assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
            np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8), name)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tfrecords(
        make_examples(), tmp_path_factory.mktemp("tfr") / "ds", num_shards=4, progress=False
    )


def test_layout_and_schema(written: Path) -> None:
    names = sorted(p.name for p in written.iterdir())
    shards = [f"part-{i:05d}-of-00004.tfrecord.gz" for i in range(4)]
    assert names == sorted([*shards, SCHEMA_FILE])
    schema = json.loads((written / SCHEMA_FILE).read_text())
    assert schema["compression"] == "GZIP" and schema["num_examples"] == N
    assert [s["file"] for s in schema["shards"]] == shards
    assert [s["num_examples"] for s in schema["shards"]] == [6, 6, 6, 5]
    assert schema["features"]["wave"] == {"dtype": "float32", "shape": [3, 4]}
    assert schema["features"]["text"] == {"dtype": "string", "shape": []}
    assert schema["features"]["blob"] == {"dtype": "bytes", "shape": []}
    assert schema["features"]["u64"] == {"dtype": "uint64", "shape": []}


def test_round_trip_is_exact_and_in_order(written: Path) -> None:
    examples = make_examples()
    ds = read_tfrecords(written)
    assert ds.cardinality().numpy() == N
    assert ds.element_spec["image"] == tf.TensorSpec((4, 5, 3), tf.uint8)
    assert ds.element_spec["pair"] == tf.TensorSpec((2,), tf.string)
    assert_exact(stack(list(ds.as_numpy_iterator())), examples)

    batches = list(read_tfrecords(written, batch_size=5).as_numpy_iterator())
    assert [len(b["id"]) for b in batches] == [5, 5, 5, 5, 3]
    assert_exact({k: np.concatenate([b[k] for b in batches]) for k in examples}, examples)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cycle_length": 2},
        {"deterministic": False},
        {"shuffle_files": True, "seed": 7},
        {"shuffle_files": True, "cycle_length": 1, "batch_size": 4},
    ],
)
def test_interleave_options_return_every_row_exactly_once(written: Path, kwargs) -> None:
    examples = make_examples()
    ds = read_tfrecords(written, **kwargs)
    got = stack(list((ds.unbatch() if "batch_size" in kwargs else ds).as_numpy_iterator()))
    order = np.argsort(got["id"])
    assert got["id"][order].tolist() == list(range(N))
    assert_exact({k: v[order] for k, v in got.items()}, examples)


def test_cycle_length_one_reads_shard_by_shard(written: Path) -> None:
    ids = [int(r["id"]) for r in read_tfrecords(written, cycle_length=1).as_numpy_iterator()]
    assert ids == [i for shard in range(4) for i in range(shard, N, 4)]


@pytest.mark.parametrize(("compression", "suffix"), [("ZLIB", ".tfrecord.zz"), ("", ".tfrecord")])
def test_other_compressions(tmp_path: Path, compression: str, suffix: str) -> None:
    examples = make_examples(5)
    out = write_tfrecords(examples, tmp_path / "ds", 2, compression=compression, progress=False)
    assert (out / f"part-00001-of-00002{suffix}").is_file()
    assert_exact(stack(list(read_tfrecords(out).as_numpy_iterator())), examples)


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tfrecords({"x": np.zeros((7, 2), np.float32)}, tmp_path / "ds", 3)
    assert "7/7" in capsys.readouterr().err


def test_damaged_or_missing_files_are_named(tmp_path: Path) -> None:
    out = write_tfrecords(make_examples(12), tmp_path / "ds", 3, progress=False)
    shard = out / "part-00001-of-00003.tfrecord.gz"
    raw = shard.read_bytes()

    shard.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ValueError, match=rf"shard {shard} is truncated: {len(raw) - 40} bytes"):
        read_tfrecords(out)

    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=rf"shard {shard} is corrupt: its sha256 differs"):
        read_tfrecords(out)
    # verify=False skips the checksum: TensorFlow's own error then surfaces while reading
    with pytest.raises(tf.errors.OpError):
        list(read_tfrecords(out, verify=False))

    shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"shard {shard} listed in schema.json"):
        read_tfrecords(out)
    (out / SCHEMA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"schema\.json not found"):
        read_tfrecords(out)


@pytest.mark.parametrize(
    ("examples", "num_shards", "error", "message"),
    [
        ({"a": np.zeros(3), "b": np.zeros(4)}, 1, ValueError, "same number of rows"),
        ({"a": np.zeros(3)}, 4, ValueError, r"num_shards must be in \[1, 3\]"),
        ({"a": np.zeros(3, np.complex64)}, 1, ValueError, "dtype complex64 is not supported"),
        ({"a": np.array(["x", b"y", 1], dtype=object)}, 1, ValueError, "only str or only bytes"),
        ({}, 1, ValueError, "examples is empty"),
    ],
)
def test_write_errors(tmp_path: Path, examples, num_shards: int, error, message: str) -> None:
    with pytest.raises(error, match=message):
        write_tfrecords(examples, tmp_path / "ds", num_shards, progress=False)


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not empty"):
        write_tfrecords({"a": np.zeros(2)}, tmp_path, 1, progress=False)
    with pytest.raises(ValueError, match="compression must be one of"):
        write_tfrecords({"a": np.zeros(2)}, tmp_path / "x", 1, compression="BZ2")
