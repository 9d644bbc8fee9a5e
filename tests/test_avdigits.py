"""Tests for data_pipelines.avdigits on the real FSDD recordings and MNIST test images.

Needs MMKERAS_DATA_DIR with fsdd/, mnist/ and avdigits/ (conftest's ``data_dir`` fails when
unset). The download code is never run here.
"""

from __future__ import annotations

import ast
import gzip
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import avdigits
from mmkeras.data.audio import pad_or_crop, read_audio
from mmkeras.data.quarantine import BadRecordError

README_FIRST_PAIRS = [("0_george_0.wav", 441, 0), ("0_george_1.wav", 5251, 0),
                      ("0_george_10.wav", 4188, 0)]
DB_ATOL = 5e-3  # log-mel dB tolerance documented in mmkeras.data.audio (top_db=80)
BAD_CLIP = "3_theo_7.wav"


@pytest.fixture(scope="module")
def dataset(data_dir: Path):
    return avdigits.load()


@pytest.fixture(scope="module")
def mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return avdigits.read_mnist(data_dir / "mnist")


def test_local_copies_are_used(data_dir, dataset):
    recordings, mnist = avdigits.data_folders()
    assert recordings == data_dir / "fsdd" / "recordings" and mnist == data_dir / "mnist"
    assert dataset.info["recordings"] == str(recordings)


def test_recipe_reproduces_readme_and_verify_pairing(data_dir, dataset):
    train = dataset.splits["train"]
    ours = [(str(f), int(i), int(y)) for f, i, y in
            zip(train["file"][:3], train["mnist_index"][:3], train["label"][:3], strict=True)]
    assert ours == README_FIRST_PAIRS
    script = data_dir / "avdigits" / "verify_pairing.py"
    proc = subprocess.run([sys.executable, str(script), str(data_dir)],
                          capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("first 3 train pairs:"))
    assert ast.literal_eval(line.split(":", 1)[1].strip()) == README_FIRST_PAIRS


def test_splits_sizes_labels_and_image_pools(dataset, mnist):
    images, labels = mnist
    speakers = {}
    used: list[int] = []
    for split, n in (("train", 2000), ("val", 500), ("test", 500)):
        arrays = dataset.splits[split]
        assert dataset.num_examples(split) == n
        assert np.bincount(arrays["label"], minlength=10).tolist() == [n // 10] * 10
        speakers[split] = set(arrays["speaker"].tolist())
        assert speakers[split] == set(avdigits.SPLIT_SPEAKERS[split])
        idx = arrays["mnist_index"]
        lo, hi = avdigits.IMAGE_POOLS[split]
        assert ((idx >= lo) & (idx < hi)).all()
        np.testing.assert_array_equal(labels[idx], arrays["label"])  # every pair agrees
        np.testing.assert_array_equal(arrays["image"][..., 0], images[idx])
        assert [int(f.split("_")[0]) for f in arrays["file"]] == arrays["label"].tolist()
        assert list(arrays["file"]) == sorted(arrays["file"])
        used += idx.tolist()
    assert len(used) == len(set(used)) == 3000  # no MNIST image used twice
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"]
                or speakers["val"] & speakers["test"])


def test_validation_folds_rotate_the_speaker_and_keep_the_test_pairs(dataset, mnist):
    _, labels = mnist
    seen = []
    for fold, speaker in enumerate(avdigits.VAL_FOLD_SPEAKERS):
        folded = avdigits.load(val_fold=fold)
        val, train = folded.splits["val"], folded.splits["train"]
        assert set(val["speaker"].tolist()) == {speaker} and len(val["label"]) == 500
        assert speaker not in set(train["speaker"].tolist()) and len(train["label"]) == 2000
        for split in ("train", "val"):  # each split still draws from its own MNIST pool
            lo, hi = avdigits.IMAGE_POOLS[split]
            idx = folded.splits[split]["mnist_index"]
            assert ((idx >= lo) & (idx < hi)).all()
            np.testing.assert_array_equal(labels[idx], folded.splits[split]["label"])
        for key in ("file", "mnist_index"):
            np.testing.assert_array_equal(folded.splits["test"][key], dataset.splits["test"][key])
        seen.append(speaker)
    assert seen[-1] == "theo" and len(set(seen)) == 5
    last = folded  # the loop's last fold, 4, is the default split
    for split in ("train", "val"):
        np.testing.assert_array_equal(last.splits[split]["file"], dataset.splits[split]["file"])
        np.testing.assert_array_equal(last.splits[split]["mnist_index"],
                                      dataset.splits[split]["mnist_index"])
    with pytest.raises(ValueError, match="val_fold must be in 0-4"):
        avdigits.load(val_fold=5)


def test_specs_and_arrays(dataset, data_dir):
    assert dataset.name == "avdigits" and dataset.class_names == [str(d) for d in range(10)]
    audio, image = dataset.modalities["audio"], dataset.modalities["image"]
    assert (audio.kind, audio.shape, audio.dtype) == ("audio", (8000,), "float32")
    assert audio.options == {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 40}
    assert (image.kind, image.shape, image.dtype) == ("image", (28, 28, 1), "uint8")
    val = dataset.splits["val"]
    assert val["audio"].dtype == np.float32 and val["image"].dtype == np.uint8
    assert np.abs(val["audio"]).max() <= 1.0
    # a short and a long clip: decoded as read_audio does, padded/cropped as pad_or_crop does
    rows = {f: row for split in ("train", "val", "test")
            for f, row in zip(dataset.splits[split]["file"], dataset.splits[split]["audio"],
                              strict=True)}
    for name, samples in (("0_theo_0.wav", 3142), ("9_theo_16.wav", 18262)):
        clip, _ = read_audio(data_dir / "fsdd" / "recordings" / name)
        assert len(clip) == samples
        np.testing.assert_array_equal(rows[name], pad_or_crop(clip, 8000).numpy())
    smaller = avdigits.load(clip_samples=4000, n_mels=20, augment=True)
    assert smaller.splits["test"]["audio"].shape == (500, 4000)
    assert smaller.modalities["audio"].options["n_mels"] == 20
    assert smaller.modalities["image"].options["augment"] == {"translation": 0.1, "rotation": 0.05}


@pytest.fixture
def bad_data_dir(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Symlinks to the real files, with BAD_CLIP truncated and one misnamed file added."""
    root = tmp_path / "data"
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    (root / "mnist").symlink_to(data_dir / "mnist")
    for src in (data_dir / "fsdd" / "recordings").glob("*.wav"):
        if src.name != BAD_CLIP:
            (recordings / src.name).symlink_to(src)
    raw = (data_dir / "fsdd" / "recordings" / BAD_CLIP).read_bytes()
    (recordings / BAD_CLIP).write_bytes(raw[: len(raw) // 2])
    (recordings / "notes.wav").write_bytes(raw)
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(root))
    return root


def test_bad_wav_is_quarantined_and_other_pairs_unchanged(bad_data_dir, dataset):
    ds = avdigits.load()
    records = dict(ds.info["quarantine"].records)
    bad = str(bad_data_dir / "fsdd" / "recordings" / BAD_CLIP)
    assert set(records) == {bad, str(bad_data_dir / "fsdd" / "recordings" / "notes.wav")}
    assert records[bad].startswith("truncated WAV file: data chunk declares")
    assert ds.info["quarantine"].counts() == {"truncated WAV file": 1,
                                              "unexpected file name": 1}
    assert ds.num_examples("val") == 499 and BAD_CLIP not in ds.splits["val"]["file"]
    for split in ("train", "test"):
        np.testing.assert_array_equal(ds.splits[split]["mnist_index"],
                                      dataset.splits[split]["mnist_index"])
    keep = dataset.splits["val"]["file"] != BAD_CLIP
    for key in ("mnist_index", "audio", "file"):
        np.testing.assert_array_equal(ds.splits["val"][key], dataset.splits["val"][key][keep])


def test_strict_raises_naming_the_bad_wav(bad_data_dir):
    recordings = bad_data_dir / "fsdd" / "recordings"
    with pytest.raises(BadRecordError, match=r"notes\.wav: unexpected file name"):
        avdigits.load(strict=True)
    (recordings / "notes.wav").unlink()
    with pytest.raises(BadRecordError, match=rf"{BAD_CLIP}: truncated WAV file"):
        avdigits.load(strict=True)


def test_read_idx_rejects_corrupt_files(tmp_path, data_dir):
    raw = gzip.decompress((data_dir / "mnist" / avdigits.MNIST_LABELS).read_bytes())
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match=r"short\.gz: IDX header says \(10000,\)"):
        avdigits.read_idx(short)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(raw)[:500])
    with pytest.raises(ValueError, match=r"cut\.gz: cannot read gzip"):
        avdigits.read_idx(cut)


def test_tf_pipeline_matches_python_loader(dataset):
    n = 12
    tf_feats, tf_labels = next(iter(avdigits.tf_pipeline("test", batch_size=n)))
    assert tf_feats["audio"].shape == (n, 63, 40) and tf_feats["image"].shape == (n, 28, 28, 1)
    assert tf_feats["audio"].dtype == tf.float32 and tf_labels.dtype == tf.int32
    examples = list(itertools.islice(avdigits.python_loader("test"), n))
    for i, (feats, label) in enumerate(examples):
        assert label == int(tf_labels[i])
        np.testing.assert_allclose(tf_feats["audio"][i].numpy(), feats["audio"], atol=DB_ATOL)
        np.testing.assert_allclose(tf_feats["image"][i].numpy(), feats["image"],
                                   rtol=1e-5, atol=1e-5)
    batch, labels = next(avdigits.python_loader("test", batch_size=5))
    assert batch["audio"].shape == (5, 63, 40) and labels.tolist() == tf_labels[:5].numpy().tolist()
    # images standardised with the train split's pixel mean and std
    train = dataset.splits["train"]["image"].astype(np.float64)
    test = dataset.splits["test"]["image"][:n]
    np.testing.assert_allclose(tf_feats["image"].numpy(), (test - train.mean()) / train.std(),
                               rtol=1e-5, atol=1e-5)


def test_cli_strict_stops_and_default_run_reports_the_bad_wav(bad_data_dir, tmp_path):
    """The training command: --strict exits 1 naming the file; otherwise quarantine.csv."""
    config = Path(__file__).parents[1] / "data_pipelines" / "configs" / "avdigits.yaml"
    env = {**os.environ, "MMKERAS_DATA_DIR": str(bad_data_dir)}
    base = [sys.executable, "-m", "mmkeras.train", "--config", str(config), "verbose=2"]
    proc = subprocess.run([*base, "--strict", "--output", str(tmp_path / "strict")], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1
    assert "notes.wav: unexpected file name" in proc.stderr and "strict" in proc.stderr
    out = tmp_path / "lenient"
    proc = subprocess.run([*base, "epochs=1", "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quarantine: 2 bad record(s) skipped" in proc.stdout
    rows = (out / "quarantine.csv").read_text().splitlines()
    assert rows[0] == "record,reason" and len(rows) == 3
    assert any(BAD_CLIP in r and "truncated WAV file" in r for r in rows[1:])
