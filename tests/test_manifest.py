"""Tests for mmkeras.data.manifest: manifests built here from real FSDD WAVs, PNGs encoded here,
inline text/numbers and stream files written here; every bad input is made for real.

Needs MMKERAS_DATA_DIR with fsdd/recordings/*.wav (conftest's ``data_dir`` fails when unset).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf
from PIL import Image

from mmkeras.data.manifest import (
    Field,
    ManifestSchema,
    manifest_dataset,
    read_manifest,
    read_stream,
    read_stream_window,
)
from mmkeras.data.quarantine import BadRecordError

SAMPLES, T, C = 6000, 20, 3
SCHEMA = ManifestSchema({
    "speech": Field("audio", shape=(SAMPLES,), sample_rate=8000),
    "digit": Field("image", shape=(28, 28, 1)),
    "caption": Field("text"),
    "age": Field("numeric"),
    "pos": Field("numeric", shape=(2,)),
    "accel": Field("stream", shape=(T, C)),
    "label": Field("label", classes=tuple(range(10))),
})
FORMATS = ("csv", "parquet", "jsonl")
# Image sizes around 28 x 28 so that centred crop and pad both happen.
IMAGE_SIZES = [(28, 28), (32, 24), (20, 30), (28, 28), (35, 35), (27, 29)]


def write_manifest(rows: list[dict], path: Path) -> Path:
    """Write rows (None = empty cell) as CSV, Parquet or JSON Lines by extension."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)  # keeps NaN and null apart
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def center(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centred crop/zero-pad, written out in numpy (reference for resize_with_crop_or_pad)."""
    out = np.zeros((height, width, image.shape[2]), image.dtype)
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    src_y, src_x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    dst_y, dst_x = (height - h) // 2, (width - w) // 2
    out[dst_y : dst_y + h, dst_x : dst_x + w] = image[src_y : src_y + h, src_x : src_x + w]
    return out


def stream(n: int = 201, rate: float = 50.0, seed: int = 0) -> np.ndarray:
    """``[n, 1 + C]`` rows ``t, ax, ay, az`` over 0 .. 4 s with jittered timestamps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    t[1:-1] += rng.uniform(-0.004, 0.004, n - 2)
    values = np.stack([np.sin(2 * np.pi * t), np.cos(3 * t), rng.normal(size=n)], axis=1)
    return np.column_stack([t, values])


def write_stream_csv(data: np.ndarray, path: Path, header: bool = True) -> Path:
    lines = ["t,ax,ay,az"] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fsdd(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "fsdd" / "recordings").glob("*.wav"))
    if len(files) < 3000:
        pytest.fail(f"expected 3000 FSDD recordings under {data_dir}/fsdd/recordings")
    return files[7::499][:6]  # 6 clips, different digits and speakers


@pytest.fixture
def example(tmp_path: Path, fsdd: list[Path]) -> tuple[Path, list[dict], dict]:
    """A folder with PNGs, stream files and 6 good rows; returns (folder, rows, references)."""
    rng = np.random.default_rng(1)
    images, refs = [], {"images": [], "streams": {}}
    (tmp_path / "img").mkdir()
    for i, (h, w) in enumerate(IMAGE_SIZES):
        pixels = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        (tmp_path / "img" / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
        images.append(f"img/{i}.png")  # relative to the manifest's folder
        refs["images"].append(pixels)
    data = stream()
    write_stream_csv(data, tmp_path / "accel.csv")
    np.save(tmp_path / "accel.npy", stream(seed=2))
    refs["streams"] = {"accel.csv": data, "accel.npy": stream(seed=2)}
    captions = ["NA", "null", "zwölf", "", "3", "a, \"quoted\" caption"]
    rows = []
    for i, wav in enumerate(fsdd):
        rows.append({
            "speech_path": str(wav),
            "digit_path": images[i],
            "caption": captions[i] or "empty?",
            "age": 20.5 + i,
            "pos_0": float(i),
            "pos_1": -1.5 * i,
            "accel_path": "accel.csv" if i % 2 == 0 else "accel.npy",
            "accel_start_s": 0.25 * i,
            "accel_end_s": 0.25 * i + 1.0 + 0.1 * i,
            "label": int(wav.name.split("_")[0]),
            "speaker": wav.name.split("_")[1],  # an extra column, kept as is
        })
    return tmp_path, rows, refs


def collect(ds: tf.data.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    inputs, labels = [], []
    for x, y in ds.as_numpy_iterator():
        inputs.append(x)
        labels.append(y)
    return {k: np.concatenate([b[k] for b in inputs]) for k in inputs[0]}, np.concatenate(labels)


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_dataset_equals_direct_decoding(example, fmt: str) -> None:
    folder, rows, refs = example
    path = write_manifest(rows, folder / f"train.{fmt}")
    df, quarantine = read_manifest(path, SCHEMA)
    assert len(quarantine) == 0, quarantine.summary()
    assert list(df.index) == list(range(6))
    assert df["speaker"].tolist() == [r["speaker"] for r in rows]
    assert df["digit_path"].tolist() == [str(folder / p) for p in (r["digit_path"] for r in rows)]

    ds = manifest_dataset(df, SCHEMA, batch_size=4)
    assert ds.element_spec[0]["speech"].shape.as_list() == [None, SAMPLES]
    assert ds.element_spec[1].dtype == tf.int32
    x, y = collect(ds)
    assert y.tolist() == [r["label"] for r in rows]
    for i, row in enumerate(rows):
        wave, rate = sf.read(row["speech_path"], dtype="float32")
        assert rate == 8000
        expected = np.zeros(SAMPLES, np.float32)
        expected[: min(len(wave), SAMPLES)] = wave[:SAMPLES]
        np.testing.assert_array_equal(x["speech"][i], expected)
        np.testing.assert_array_equal(x["digit"][i], center(refs["images"][i], 28, 28))
        data = refs["streams"][row["accel_path"]]
        start, end = row["accel_start_s"], row["accel_end_s"]
        grid = start + (end - start) * np.arange(T) / T
        window = np.stack([np.interp(grid, data[:, 0], data[:, 1 + c]) for c in range(C)], 1)
        np.testing.assert_array_equal(x["accel"][i], window.astype(np.float32))
        assert x["caption"][i].decode() == row["caption"]
        assert x["age"][i] == np.float32(row["age"])
        np.testing.assert_array_equal(x["pos"][i], np.float32([row["pos_0"], row["pos_1"]]))

    shuffled = manifest_dataset(df, SCHEMA, batch_size=6, shuffle=True, seed=3)
    _, y_shuffled = collect(shuffled)
    assert sorted(y_shuffled.tolist()) == sorted(y.tolist())


def make_bad_rows(folder: Path, rows: list[dict], fsdd: list[Path]) -> list[tuple[dict, str, str]]:
    """Each bad input made for real -> (row, file named in the record or "", reason prefix)."""
    raw = fsdd[0].read_bytes()
    (folder / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    (folder / "noise.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    wave, _ = sf.read(fsdd[1], dtype="int16")
    sf.write(folder / "fast.wav", wave, 16000, subtype="PCM_16")
    png = (folder / "img" / "0.png").read_bytes()
    (folder / "img" / "corrupt.png").write_bytes(png[: len(png) // 2])
    backwards = stream()
    backwards[[40, 41], 0] = backwards[[41, 40], 0]
    write_stream_csv(backwards, folder / "backwards.csv")
    good = rows[0]
    return [
        ({**good, "speech_path": "truncated.wav"}, "truncated.wav", "bad audio: truncated WAV"),
        ({**good, "speech_path": "noise.wav"}, "noise.wav", "bad audio: cannot decode audio"),
        ({**good, "speech_path": "fast.wav"}, "fast.wav", "wrong sample rate: 16000 Hz"),
        ({**good, "digit_path": "img/corrupt.png"}, "img/corrupt.png", "bad image: Invalid PNG"),
        ({**good, "digit_path": "img/nope.png"}, "img/nope.png", "missing file"),
        ({**good, "age": float("nan")}, "", "non-finite value: column 'age'"),
        ({**good, "label": 11}, "", "unknown label: label='11' not in [0, 1,"),
        ({**good, "accel_start_s": 3.5, "accel_end_s": 4.5}, "accel.csv",
         "stream window outside the stream"),
        ({**good, "accel_path": "backwards.csv"}, "backwards.csv",
         "non-monotonic timestamps: row 41"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_rows_are_quarantined_with_row_file_and_reason(example, fsdd, fmt: str) -> None:
    folder, rows, _ = example
    bad = make_bad_rows(folder, rows, fsdd)
    all_rows = rows[:2] + [row for row, _, _ in bad] + rows[2:]
    path = write_manifest(all_rows, folder / f"mixed.{fmt}")
    df, quarantine = read_manifest(path, SCHEMA)

    assert list(df.index) == [0, 1, *range(2 + len(bad), len(all_rows))]
    assert len(quarantine) == len(bad)
    for k, ((record, reason), (_, file, expected)) in enumerate(
        zip(quarantine.records, bad, strict=True)
    ):
        n = 2 + k
        assert record.startswith(f"{path}:row {n}"), record
        if file:
            assert record == f"{path}:row {n} ({folder / file})", record
        assert reason.startswith(expected), reason
    # the valid rows still make a dataset
    _, y = collect(manifest_dataset(df, SCHEMA, batch_size=8))
    assert y.tolist() == [r["label"] for r in rows]


def test_strict_raises_on_the_first_bad_row(example, fsdd) -> None:
    folder, rows, _ = example
    bad = make_bad_rows(folder, rows, fsdd)
    path = write_manifest(rows[:1] + [row for row, _, _ in bad[3:]], folder / "m.csv")
    with pytest.raises(BadRecordError, match=r"m\.csv:row 1 \(.*corrupt\.png\): bad image"):
        read_manifest(path, SCHEMA, strict=True)


def test_csv_specific_cells(example) -> None:
    folder, rows, _ = example
    bad = [{**rows[1], "pos_1": "abc"}, {**rows[2], "caption": ""}, {**rows[3], "age": "inf"}]
    path = write_manifest([rows[0], *bad], folder / "m.csv")
    df, quarantine = read_manifest(path, SCHEMA)
    assert list(df.index) == [0]
    assert [r for _, r in quarantine.records] == [
        "not a number: column 'pos_1' holds 'abc'",
        "missing value: column 'caption' is empty",
        "non-finite value: column 'age' is inf",
    ]


def test_missing_required_column_is_an_error_not_a_quarantine(example) -> None:
    folder, rows, _ = example
    path = write_manifest(
        [{k: v for k, v in r.items() if k not in ("age", "accel_end_s")} for r in rows],
        folder / "m.jsonl",
    )
    with pytest.raises(ValueError, match=r"m\.jsonl: missing required column\(s\) "
                                         r"\['age', 'accel_end_s'\]"):
        read_manifest(path, SCHEMA)
    with pytest.raises(ValueError, match=r"unknown manifest type '\.tsv'"):
        read_manifest(folder / "m.tsv", SCHEMA)


def test_unreadable_manifests_name_the_file(example) -> None:
    """Empty, non-UTF-8, badly quoted or duplicate-header CSVs and a non-Parquet file: one
    ValueError naming the manifest (and the line for bad bytes), never pandas' bare message."""
    folder, rows, _ = example
    good = write_manifest(rows, folder / "good.csv").read_bytes()
    lines = good.splitlines(keepends=True)
    header = lines[0].decode().rstrip("\r\n")
    cases = {
        "empty.csv": (b"", "empty manifest"),
        "latin1.csv": (b"".join(lines[:3]) + "caf\u00e9,1\n".encode("latin-1"),
                       ":4: not UTF-8 text (byte 0xe9)"),
        "quote.csv": (lines[0] + b'"unterminated,1\n', "not a readable CSV file"),
        "dup.csv": (f"{header},label\n".encode() + b"".join(lines[1:]),
                    "column(s) ['label'] appear more than once"),
        "bad.parquet": (b"not parquet", "not a readable Parquet file"),
    }
    for name, (content, message) in cases.items():
        (folder / name).write_bytes(content)
        with pytest.raises(ValueError) as err:
            read_manifest(folder / name, SCHEMA)
        assert str(err.value).startswith(f"{folder / name}") and message in str(err.value), err


def test_undecodable_audio_reasons_are_the_same_on_every_run(example) -> None:
    """libsndfile's message names the in-memory buffer by address; the report leaves it out."""
    folder, rows, _ = example
    (folder / "text.wav").write_bytes(b"not audio at all " * 20)
    (folder / "empty.wav").write_bytes(b"")
    bad = [{**rows[0], "speech_path": "text.wav"}, {**rows[0], "speech_path": "empty.wav"}]
    _, quarantine = read_manifest(write_manifest(bad, folder / "m.csv"), SCHEMA)
    assert [r for _, r in quarantine.records] == [
        "bad audio: cannot decode audio: Format not recognised.",
        "bad audio: cannot decode audio: empty file (0 bytes)",
    ]


def test_optional_fields_follow_the_presence_convention(example, fsdd) -> None:
    folder, rows, _ = example
    schema = ManifestSchema({
        "speech": Field("audio", shape=(SAMPLES,), sample_rate=8000, required=False),
        "accel": Field("stream", shape=(T, C), required=False),
        "caption": Field("text", required=False),
        "age": Field("numeric", required=False),  # column absent from the manifest
        "label": Field("label", classes=tuple(range(10))),
    })
    rows = [{k: v for k, v in r.items() if k != "age"} for r in rows[:3]]
    rows[1]["speech_path"] = rows[1]["caption"] = None
    rows[2]["accel_path"] = None
    rows[2]["speech_path"] = "noise.wav"  # there, but bad: still quarantined
    (folder / "noise.wav").write_bytes(b"RIFF not really")
    df, quarantine = read_manifest(write_manifest(rows, folder / "m.parquet"), schema)
    assert list(df.index) == [0, 1] and len(quarantine) == 1
    x, _ = collect(manifest_dataset(df, schema, batch_size=2))
    assert x["speech_present"].tolist() == [[1.0], [0.0]]
    assert not x["speech"][1].any() and x["speech"][0].any()
    assert x["caption"].tolist() == [rows[0]["caption"].encode(), b""]
    assert x["caption_present"].tolist() == [[1.0], [0.0]]
    assert x["age_present"].tolist() == [[0.0], [0.0]] and not x["age"].any()
    assert x["accel_present"].tolist() == [[1.0], [1.0]]


def test_flac_jpeg_and_unsupported_wav(tmp_path: Path, fsdd: list[Path]) -> None:
    wave, rate = sf.read(fsdd[2], dtype="int16")
    sf.write(tmp_path / "a.flac", wave, rate, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", wave, rate, subtype="PCM_24")
    yy, xx = np.mgrid[:30, :26]
    pixels = np.stack([yy * 8, xx * 9, (yy + xx) * 4], axis=-1).astype(np.uint8)  # smooth
    (tmp_path / "a.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=95).numpy())
    schema = ManifestSchema({
        "speech": Field("audio", shape=(SAMPLES,), sample_rate=8000),
        "photo": Field("image", shape=(30, 26, 3)),
        "label": Field("label"),  # a regression target
    })
    rows = [
        {"speech_path": "a.flac", "photo_path": "a.jpg", "label": 0.5},
        {"speech_path": "b.wav", "photo_path": "a.jpg", "label": 1.5},
    ]
    df, quarantine = read_manifest(write_manifest(rows, tmp_path / "m.csv"), schema)
    assert quarantine.records[0][1].startswith("unsupported WAV encoding: WAV/PCM_24")
    x, y = collect(manifest_dataset(df, schema, batch_size=1))
    assert y.dtype == np.float32 and y.tolist() == [0.5]
    reference = sf.read(fsdd[2], dtype="float32")[0][:SAMPLES]
    np.testing.assert_array_equal(x["speech"][0, : len(reference)], reference)
    with Image.open(tmp_path / "a.jpg") as photo:  # same (accurate integer) IDCT as PIL
        np.testing.assert_array_equal(x["photo"][0], np.asarray(photo))
    with pytest.raises(ValueError, match="has no rows"):
        manifest_dataset(df.iloc[:0], schema, batch_size=1)


def test_read_stream_formats_and_window_method(tmp_path: Path) -> None:
    data = stream()
    a = read_stream(write_stream_csv(data, tmp_path / "h.csv"))
    b = read_stream(write_stream_csv(data, tmp_path / "n.csv", header=False))
    np.save(tmp_path / "s.npy", data)
    c = read_stream(tmp_path / "s.npy")
    for t, values in (a, b, c):
        np.testing.assert_array_equal(t, data[:, 0])
        np.testing.assert_array_equal(values, data[:, 1:])

    # NaN rows are dropped and equal timestamps averaged before interpolating
    rows = np.array([[0.0, 0.0], [1.0, np.nan], [1.0, 4.0], [1.0, 2.0], [2.0, 1.0], [3.0, 9.0]])
    np.save(tmp_path / "d.npy", rows)
    window = read_stream_window(tmp_path / "d.npy", 0.5, 2.5, 4)
    np.testing.assert_allclose(window[:, 0], np.interp([0.5, 1.0, 1.5, 2.0], [0, 1, 2, 3],
                                                       [0, 3, 1, 9]))
    # the cache notices a rewritten file
    np.save(tmp_path / "d.npy", np.array([[0.0, 5.0], [3.0, 5.0]]))
    assert read_stream_window(tmp_path / "d.npy", 0.5, 2.5, 4)[:, 0].tolist() == [5.0] * 4

    with pytest.raises(ValueError, match=r"s\.npy: stream window outside the stream"):
        read_stream_window(tmp_path / "s.npy", -0.1, 1.0, 4)
    with pytest.raises(ValueError, match="bad stream window: start 2 s is not before end 1 s"):
        read_stream_window(tmp_path / "s.npy", 2.0, 1.0, 4)
    (tmp_path / "x.csv").write_text("t,a\n0,1\n1,zz\n")
    with pytest.raises(ValueError, match=r"x\.csv: bad stream: cannot parse: line 3, column 2: "
                                         r"'zz' is not a number"):
        read_stream(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("0,1\n1e9x,2\n")  # no header line
    with pytest.raises(ValueError, match=r"line 2, column 1: '1e9x' is not a number"):
        read_stream(tmp_path / "y.csv")
    (tmp_path / "z.npy").write_bytes(b"t,a\n0,1\n")
    with pytest.raises(ValueError, match=r"z\.npy: bad stream: cannot parse: not a \.npy file"):
        read_stream(tmp_path / "z.npy")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        read_stream(tmp_path / "x.txt")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Field("video"), "kind 'video'"),
        (lambda: Field("audio", shape=(8000,)), "sample_rate is required"),
        (lambda: Field("image", shape=(28, 28, 2)), "channels must be 1, 3 or 4"),
        (lambda: Field("stream", shape=(10,)), "invalid shape"),
        (lambda: Field("numeric", dtype="int8"), "dtype 'int8'"),
        (lambda: Field("label", classes=(1, "1")), "distinct"),
        (lambda: Field("label", required=False), "always required"),
        (lambda: ManifestSchema({"x": Field("numeric")}), "at least one field of kind 'label'"),
        (lambda: ManifestSchema({"a": Field("text", required=False), "a_present": Field("text"),
                                 "y": Field("label")}), "clash"),
        (lambda: ManifestSchema({"a_path": Field("text"), "y": Field("label"),
                                 "a": Field("image", shape=(2, 2, 1))}), "clash"),
    ],
)
def test_schema_validation(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_schema_from_dict() -> None:
    schema = ManifestSchema.from_dict({
        "img": {"kind": "image", "shape": [28, 28, 1]},
        "y": {"kind": "label", "classes": ["a", "b"], "dtype": "int64"},
    })
    assert schema.fields["img"].shape == (28, 28, 1)
    assert schema.fields["y"].classes == ("a", "b") and schema.fields["y"].dtype == "int64"
    assert schema.columns() == ["img_path", "y"]
