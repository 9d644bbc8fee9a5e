"""Paths and URLs behind one file API (mmkeras.data.fs), on TensorFlow's ram:// file system,
and the readers that use it: a manifest in a bucket, with a missing and a corrupt file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mmkeras.data import fs
from mmkeras.data.audio import read_audio
from mmkeras.data.manifest import ManifestSchema, read_manifest, read_stream


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> str:
    root = f"ram://{request.node.name}"
    fs.makedirs(root)
    yield root
    fs.rmtree(root)


def test_paths_join_relative_names_and_keep_absolute_ones(tmp_path: Path) -> None:
    assert fs.join("gs://b/data/", "run1/a.csv") == "gs://b/data/run1/a.csv"
    assert fs.join("gs://b/data", "s3://other/x.wav") == "s3://other/x.wav"
    assert fs.join("gs://b/data", "/local/x.wav") == "/local/x.wav"
    assert fs.join(tmp_path, "a.csv") == str(tmp_path / "a.csv")
    assert fs.parent("gs://b/data/m.csv") == "gs://b/data"
    assert fs.parent("file:///tmp/m.csv") == "file:///tmp"
    assert fs.parent("m.csv") == os.getcwd()
    assert fs.clean("./a//b.csv") == "a/b.csv" and fs.clean("gs://b//x") == "gs://b//x"
    assert fs.is_url("ram://x") and not fs.is_url(tmp_path)


def test_files_in_a_bucket_read_write_list_and_fail_like_local_files(bucket: str) -> None:
    fs.makedirs(f"{bucket}/a/b")
    fs.write_text(f"{bucket}/a/b/x.json", '{"k": 1}\n')
    assert fs.read_text(f"{bucket}/a/b/x.json") == '{"k": 1}\n'
    assert fs.isfile(f"{bucket}/a/b/x.json") and not fs.isfile(f"{bucket}/a/b")
    assert fs.isdir(f"{bucket}/a/b") and fs.listdir(f"{bucket}/a") == ["b"]
    assert fs.stat(f"{bucket}/a/b/x.json")[0] == 9
    assert fs.glob(f"{bucket}/*/*/*.json") == [f"{bucket}/a/b/x.json"]
    assert not tf.io.gfile.exists(f"{bucket}/a/b/x.json.tmp")  # written, then renamed
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        fs.read_bytes(f"{bucket}/nope.csv")
    with pytest.raises(FileNotFoundError):
        fs.open_file(f"{bucket}/nope.csv")
    fs.remove(f"{bucket}/a/b/x.json")
    fs.rmtree(f"{bucket}/a")
    fs.rmtree(f"{bucket}/a")  # already gone: nothing happens
    assert not fs.isdir(f"{bucket}/a")


def test_readers_and_the_quarantine_work_on_a_bucket(data_dir: Path, bucket: str) -> None:
    """A manifest, a WAV and a stream in a bucket read as from disk; a missing and a corrupt
    file are quarantined with the reasons local files get, and the report is written there."""
    wav = sorted((data_dir / "fsdd/recordings").glob("*_theo_*.wav"))[0]
    with tf.io.gfile.GFile(f"{bucket}/clips/a.wav", "wb") as f:
        f.write(wav.read_bytes())
    with tf.io.gfile.GFile(f"{bucket}/clips/bad.wav", "wb") as f:
        f.write(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    t = np.arange(0.0, 2.0, 0.01)
    stream = pd.DataFrame({"t": t, "v": np.sin(t)}).to_csv(index=False)
    with tf.io.gfile.GFile(f"{bucket}/s.csv", "w") as f:
        f.write(stream)
    rows = pd.DataFrame({"audio_path": ["clips/a.wav", "clips/missing.wav", "clips/bad.wav"],
                         "y": ["0", "1", "2"]})
    with tf.io.gfile.GFile(f"{bucket}/m.csv", "w") as f:
        f.write(rows.to_csv(index=False))

    got, rate = read_audio(f"{bucket}/clips/a.wav")
    np.testing.assert_array_equal(got, read_audio(wav)[0])
    assert rate == 8000
    times, values = read_stream(f"{bucket}/s.csv")
    np.testing.assert_allclose(times, t)
    np.testing.assert_allclose(values[:, 0], np.sin(t))

    schema = ManifestSchema.from_dict({
        "audio": {"kind": "audio", "shape": [8000], "sample_rate": 8000},
        "y": {"kind": "label", "classes": ["0", "1", "2"]},
    })
    df, quarantine = read_manifest(f"{bucket}/m.csv", schema)
    assert df["audio_path"].tolist() == [f"{bucket}/clips/a.wav"]
    assert [r for r, _ in quarantine.records] == [
        f"{bucket}/m.csv:row 1 ({bucket}/clips/missing.wav)",
        f"{bucket}/m.csv:row 2 ({bucket}/clips/bad.wav)"]
    reasons = [reason for _, reason in quarantine.records]
    assert reasons[0] == "missing file: audio_path does not exist"
    assert reasons[1].startswith("bad audio:")
    quarantine.write(f"{bucket}/quarantine.csv")
    report = pd.read_csv(fs.open_file(f"{bucket}/quarantine.csv"))
    assert report["reason"].tolist() == reasons
