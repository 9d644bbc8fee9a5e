"""MobiFall subject-independence options on the real 3-subject copy: ``ori_channels``,
``magnitude``, ``fall_margin_s`` (fall-centred windows) and ``rotate_copies``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipelines.mobifall import ADLS, CLASSES, SUBDIR, load
from mmkeras.config import resolve_config

FALLS = [CLASSES.index(c) for c in CLASSES if c not in ADLS]


@pytest.fixture(scope="module")
def root(data_dir: Path) -> Path:
    path = data_dir / SUBDIR
    if not path.is_dir():
        pytest.fail(f"MobiFall data not found at {path}; check MMKERAS_DATA_DIR={data_dir}")
    return path


@pytest.fixture(scope="module")
def plain(root: Path):
    return load(root=root, verbose=False)


def _key(arrays: dict) -> np.ndarray:
    return np.char.add(arrays["file"].astype(str), arrays["start_s"].astype(str))


def test_ori_channels_and_magnitude(root: Path, plain) -> None:
    ds = load(root=root, verbose=False, ori_channels=["roll_sin", "pitch_sin"], magnitude=True)
    assert {n: s.shape for n, s in ds.modalities.items()} == {
        "acc": (400, 4), "gyro": (400, 4), "ori": (400, 2)}
    assert ds.modalities["ori"].options["channels"] == ["pitch_sin", "roll_sin"]  # file order
    assert ds.info["channels"]["acc"] == ["x", "y", "z", "norm"]
    for name, arrays in ds.splits.items():
        base = plain.splits[name]
        np.testing.assert_array_equal(arrays["ori"], base["ori"][..., 2:])
        for sensor in ("acc", "gyro"):
            np.testing.assert_array_equal(arrays[sensor][..., :3], base[sensor])
            np.testing.assert_allclose(arrays[sensor][..., 3],
                                       np.linalg.norm(base[sensor], axis=-1), rtol=1e-5)
    # standing still: |acc| is about g whatever the phone's orientation
    sit = ds.splits["train"]["acc"][ds.splits["train"]["label"] == CLASSES.index("SCH")]
    assert 9.0 < float(np.median(sit[..., 3])) < 10.6
    for bad in (["azimuth"], [], ["pitch_sin", "pitch_sin"]):
        with pytest.raises(ValueError, match="ori_channels must be distinct names"):
            load(root=root, verbose=False, ori_channels=bad)


def test_fall_margin_keeps_windows_around_the_impact(root: Path, plain) -> None:
    ds = load(root=root, verbose=False, fall_margin_s=0.5)
    dropped = 0
    for name, arrays in ds.splits.items():
        base = plain.splits[name]
        fall, base_fall = np.isin(arrays["label"], FALLS), np.isin(base["label"], FALLS)
        # ADL windows are untouched; fall windows are a subset, from most fall trials (a trial
        # loses all when no window with enough data holds its peak 0.5 s inside)
        np.testing.assert_array_equal(arrays["acc"][~fall], base["acc"][~base_fall])
        assert set(_key(arrays)[fall]) < set(_key(base)[base_fall])
        kept, trials = set(arrays["file"][fall]), set(base["file"][base_fall])
        assert kept <= trials and len(kept) >= 0.9 * len(trials)
        dropped += int(base_fall.sum() - fall.sum())
        # the kept window holds its trial's |acc| peak at least 0.5 s (100 steps) from its edges
        for file in set(arrays["file"][fall]):
            rows = np.flatnonzero(arrays["file"] == file)
            start = arrays["start_s"][rows]
            norm = np.linalg.norm(arrays["acc"][rows], axis=-1)
            peak_s = start + norm.argmax(axis=1) / 200.0
            assert np.ptp(peak_s) < 1e-9, file  # the same instant in every kept window
            assert norm.max() > 1.3 * 9.81 and (norm.argmax(axis=1) >= 100).all()
            assert (norm.argmax(axis=1) < 300).all()
    assert ds.info["windows"]["dropped_off_impact"] == dropped > 0
    assert len(ds.info["off_impact_windows"]) == dropped
    assert plain.info["windows"]["dropped_off_impact"] == 0
    with pytest.raises(ValueError, match="fall_margin_s"):
        load(root=root, verbose=False, fall_margin_s=1.0)  # 2 s window: nothing inside


def test_rotated_copies_of_training_trials(root: Path, plain) -> None:
    ds = load(root=root, verbose=False, rotate_copies=2, rotate_deg=45.0)
    train, base = ds.splits["train"], plain.splits["train"]
    assert train["label"].size == 3 * base["label"].size
    assert np.bincount(train["copy"]).tolist() == [base["label"].size] * 3
    for name in ("val", "test"):  # only training data is augmented
        np.testing.assert_array_equal(ds.splits[name]["acc"], plain.splits[name]["acc"])
        assert (ds.splits[name]["copy"] == 0).all()
    np.testing.assert_array_equal(train["acc"][train["copy"] == 0], base["acc"])
    np.testing.assert_array_equal(train["ori"][train["copy"] == 1], base["ori"])
    angles = []
    for file in sorted(set(base["file"]))[:12]:
        orig = base["file"] == file
        x = np.concatenate([base["acc"][orig].reshape(-1, 3), base["gyro"][orig].reshape(-1, 3)])
        for copy in (1, 2):
            rows = (train["file"] == file) & (train["copy"] == copy)
            y = np.concatenate([train["acc"][rows].reshape(-1, 3),
                                train["gyro"][rows].reshape(-1, 3)])
            # one proper rotation maps acc and gyro of the whole trial (Procrustes fit)
            u, _, vt = np.linalg.svd(y.T.astype(np.float64) @ x)
            rot = u @ vt
            assert np.linalg.det(rot) > 0
            np.testing.assert_allclose(x @ rot.T, y, atol=1e-3)
            angles.append(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))
    assert min(angles) > 0 and max(angles) <= 45.0 + 1e-3 and np.ptp(angles) > 5
    again = load(root=root, verbose=False, rotate_copies=2, rotate_deg=45.0)
    np.testing.assert_array_equal(again.splits["train"]["gyro"], train["gyro"])
    with pytest.raises(ValueError, match="rotate_copies must be >= 0"):
        load(root=root, verbose=False, rotate_copies=-1)


def test_shipped_loso_config_sets_the_chosen_options() -> None:
    path = Path(__file__).resolve().parents[1] / "data_pipelines/configs/mobifall_loso.yaml"
    cfg = resolve_config(path)
    assert cfg.fusion == "attention"  # chosen on validation loss over 9 folds x 3 seeds
    args = cfg.dataset_args
    assert args["ori_channels"] == ["pitch_sin", "roll_sin"] and args["magnitude"] is True
    assert args["rotate_copies"] == 1 and args["rotate_deg"] == 45.0
    assert args["fall_margin_s"] == 0.5 and args["val_subjects"] == 2
    old = resolve_config(path, ["dataset_args.fall_margin_s=null",
                                "dataset_args.ori_channels=null", "dataset_args.magnitude=false",
                                "dataset_args.rotate_copies=0"]).dataset_args
    assert old["fall_margin_s"] is None and old["ori_channels"] is None
    assert old["magnitude"] is False and old["rotate_copies"] == 0
