"""MobiFall pipeline on the real files: parser, alignment, windows, splits, bad files, download."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_pipelines import load_dataset
from data_pipelines.mobifall import (
    ACC_MAX_GAP_NS,
    CLASSES,
    COMMIT,
    DATA_PATTERN,
    FULL_SUBDIR,
    NEAREST_TOLERANCE_NS,
    SENSORS,
    SUBDIR,
    SUBSET_DIGEST,
    SensorFileError,
    download,
    encode_orientation,
    find_trials,
    fold_subjects,
    load,
    load_trial,
    loso_subjects,
    read_sensor_file,
)
from mmkeras.data.download import folder_digest
from mmkeras.data.quarantine import BadRecordError, Quarantine

GAP_NS = 100_000_000  # the README's definition of a real acc gap
SMALL = [("SCH", s, 1) for s in (2, 3, 4)] + [("BSC", 2, 1)]


def _folder(data_dir: Path, subdir: str, what: str) -> Path:
    path = data_dir / subdir
    if not path.is_dir():
        pytest.fail(f"{what} not found at {path}; check MMKERAS_DATA_DIR={data_dir}")
    return path


@pytest.fixture(scope="module")
def root(data_dir: Path) -> Path:
    return _folder(data_dir, SUBDIR, "MobiFall data")


@pytest.fixture(scope="module")
def trials(root: Path) -> dict[str, object]:
    found = find_trials(root)
    assert len(found) == 144
    return {t.name: t for t in found}


@pytest.fixture(scope="module")
def dataset(root: Path):
    return load(root=root, verbose=False)


def _copy_trial(src_root: Path, dst_root: Path, code: str, subject: int, trial: int,
                new_trial: int | None = None) -> dict[str, Path]:
    """Copy one trial's three files (optionally renumbered) and return their new paths."""
    out = {}
    for path in src_root.glob(f"sub{subject}/*/{code}/{code}_*_{subject}_{trial}.txt"):
        rel = path.relative_to(src_root)
        name = path.name if new_trial is None else path.name.replace(
            f"_{subject}_{trial}.txt", f"_{subject}_{new_trial}.txt")
        target = dst_root / rel.parent / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        out[name.split("_")[1]] = target
    assert len(out) == 3
    return out


@pytest.fixture(scope="module")
def small_root(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("mobifall-small")
    for code, subject, trial in SMALL:
        _copy_trial(root, dst, code, subject, trial)
    return dst


# ---------------------------------------------------------------- parser


def test_parser_matches_loadtxt_on_every_file(root: Path) -> None:
    files = sorted(root.glob("sub*/*/*/*.txt"))
    assert len(files) == 432
    for path in files:
        t, x, header = read_sensor_file(path)
        ref = np.loadtxt(path, delimiter=",", skiprows=16)
        ref_t = np.loadtxt(path, delimiter=",", skiprows=16, usecols=0, dtype=np.int64)
        assert t.dtype == np.int64 and x.dtype == np.float64 and x.shape == (len(ref), 3)
        np.testing.assert_array_equal(t, ref_t)
        np.testing.assert_array_equal(x, ref[:, 1:])
        assert header["data_line"] == 17
        assert header["Subject ID"] == path.name.split("_")[2]
        assert header["Activity"].split(" - ")[1] == path.name[:3]


def test_parser_header_fields(root: Path) -> None:
    _, _, header = read_sensor_file(root / "sub2/FALLS/BSC/BSC_ori_2_1.txt")
    assert header["Datetime"] == "05/07/2013 10:38:43"
    assert header["Activity"] == "12 - BSC - Back sitting chair - 10s"
    assert header["Gender"] == "Male"
    assert header["comments"] == ["Angle around the z x y axes.",
                                  "timestamp(ns), Azimuth , Pitch, Roll(degrees)"]


# ---------------------------------------------------------------- alignment


def _merge_asof(grid: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    right = pd.DataFrame(x).assign(t=t)
    merged = pd.merge_asof(pd.DataFrame({"t": grid}), right, on="t", direction="nearest",
                           tolerance=NEAREST_TOLERANCE_NS)
    return merged.drop(columns="t").to_numpy(np.float64)


@pytest.mark.parametrize("name", ["BSC_3_2", "CSI_2_3", "JOG_4_1"])
def test_alignment_equals_numpy_and_pandas(trials, name: str) -> None:
    trial = trials[name]
    aligned = load_trial(trial)
    raw = {s: read_sensor_file(trial.paths[s])[:2] for s in SENSORS}
    grid = aligned.t_ns
    assert grid[0] == max(t[0] for t, _ in raw.values())
    assert grid[-1] <= min(t[-1] for t, _ in raw.values())
    assert (np.diff(grid) == 5_000_000).all()

    t, x = raw["acc"]  # linear: numpy.interp inside the bridged steps
    lo = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 2)
    expected_mask = (grid == t[lo]) | (t[lo + 1] - t[lo] <= ACC_MAX_GAP_NS) | (grid == t[-1])
    np.testing.assert_array_equal(aligned.mask["acc"], expected_mask)
    m = aligned.mask["acc"]
    for c in range(3):
        ref = np.interp((grid[m] - t[0]).astype(float), (t - t[0]).astype(float), x[:, c])
        np.testing.assert_allclose(aligned.values["acc"][m, c], ref, rtol=0, atol=1e-12)
    assert np.isnan(aligned.values["acc"][~m]).all()

    for sensor in ("gyro", "ori"):  # nearest within 5 ms: pandas.merge_asof
        t, x = raw[sensor]
        ref = _merge_asof(grid, t, x)
        if sensor == "ori":
            ref = encode_orientation(ref)
        np.testing.assert_array_equal(aligned.mask[sensor], ~np.isnan(ref).any(axis=1))
        np.testing.assert_array_equal(aligned.values[sensor], ref)


def test_presence_mask_marks_real_acc_gaps(trials) -> None:
    with_gap = 0
    for trial in trials.values():
        aligned = load_trial(trial)
        t, _, _ = read_sensor_file(trial.paths["acc"])
        grid, mask = aligned.t_ns, aligned.mask["acc"]
        i = np.searchsorted(t, grid, side="right") - 1  # the acc sample at or before each step
        inside = (i >= 0) & (i < len(t) - 1) & (grid != t[np.clip(i, 0, None)])
        gap = np.where(inside, t[np.clip(i + 1, 0, len(t) - 1)] - t[np.clip(i, 0, None)], 0)
        assert not mask[gap > GAP_NS].any(), trial.name
        assert mask[inside & (gap <= 35_000_000)].all(), trial.name
        with_gap += bool((np.diff(t) > GAP_NS).any())
    assert with_gap == 110  # README: 110 of 144 acc files have a gap > 100 ms
    gyro = load_trial(trials["BSC_3_2"]).mask["gyro"]  # the one 952 ms gyro dropout
    assert (~gyro).sum() >= 0.9 * 190


def test_orientation_encoding_removes_wraps_and_pitch_flips(trials) -> None:
    trial = trials["CSI_2_3"]
    _, deg, _ = read_sensor_file(trial.paths["ori"])
    assert np.abs(np.diff(deg[:, 1])).max() > 100  # raw pitch flips p -> -180 - p
    aligned = load_trial(trial)
    ori, m = aligned.values["ori"], aligned.mask["ori"]
    np.testing.assert_allclose(ori[m, 0] ** 2 + ori[m, 1] ** 2, 1.0)
    both = m[1:] & m[:-1]
    assert np.abs(np.diff(ori, axis=0))[both].max() < 0.1  # continuous on the grid
    az = np.array([[-38.0, 0, 0], [322.0, 0, 0], [359.9, 0, 0], [0.1, 0, 0]])
    enc = encode_orientation(az)
    np.testing.assert_allclose(enc[0], enc[1], atol=1e-12)
    assert np.abs(enc[2] - enc[3]).max() < 0.01


# ---------------------------------------------------------------- windows and splits


def test_windows_shapes_labels_and_presence(dataset) -> None:
    assert dataset.name == "mobifall" and dataset.class_names == list(CLASSES)
    assert len(CLASSES) == 11
    assert {n: s.shape for n, s in dataset.modalities.items()} == {
        "acc": (400, 3), "gyro": (400, 3), "ori": (400, 4)}
    assert all(s.kind == "timeseries" and s.dtype == "float32"
               for s in dataset.modalities.values())
    for arrays in dataset.splits.values():
        n = len(arrays["label"])
        for sensor in SENSORS:
            assert arrays[sensor].dtype == np.float32 and arrays[sensor].shape[0] == n
            assert np.isfinite(arrays[sensor]).all()
            assert arrays[f"{sensor}_mask"].shape == (n, 400)
            assert (arrays[f"{sensor}_presence"] >= 0.8).all()
            np.testing.assert_allclose(arrays[f"{sensor}_mask"].mean(1),
                                       arrays[f"{sensor}_presence"], rtol=1e-6)
        codes = np.array([f.rsplit("/", 1)[1][:3] for f in arrays["file"]])
        assert (np.array(CLASSES)[arrays["label"]] == codes).all()
        assert set(np.unique(arrays["label"])) == set(range(11))
    windows = dataset.info["windows"]
    dropped = dataset.info["dropped_windows"]
    assert windows["dropped_low_presence"] == len(dropped) > 0
    assert windows["kept"] == sum(dataset.num_examples(s) for s in dataset.splits)
    assert all(min(d["presence"].values()) < 0.8 for d in dropped)
    assert dataset.info["trials"] == {"found": 144, "loaded": 144, "skipped": 0}
    assert len(dataset.info["quarantine"]) == 0


def test_splits_are_subject_disjoint(dataset, small_root: Path) -> None:
    subjects = {s: set(a["subject"].tolist()) for s, a in dataset.splits.items()}
    assert subjects == {"train": {2}, "val": {3}, "test": {4}}
    files = [set(a["file"].tolist()) for a in dataset.splits.values()]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    other = load(root=small_root, test_subject=2, val_subject=4, verbose=False)
    assert {s: set(a["subject"].tolist()) for s, a in other.splits.items()} == {
        "train": {3}, "val": {4}, "test": {2}}
    with pytest.raises(ValueError, match="both 3"):
        load(root=small_root, test_subject=3, val_subject=3)
    with pytest.raises(ValueError, match=r"test_subject=7 has no trials.*\[2, 3, 4\]"):
        load(root=small_root, test_subject=7)


def test_registered_with_load_dataset(small_root: Path) -> None:
    ds = load_dataset("mobifall", root=small_root, window_s=1.0, hop_s=0.5, verbose=False)
    assert ds.modalities["acc"].shape == (200, 3)


# ---------------------------------------------------------------- bad files


def _rows(text: str) -> tuple[list[str], int]:
    lines = text.split("\r\n")
    return lines, lines.index("@DATA") + 1  # index of data row 0


def _edit_rows(edit: Callable[[list[str]], None]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        lines, first = _rows(text)
        body = [r for r in lines[first:] if r]
        edit(body)
        return "\r\n".join([*lines[:first], *body, ""])
    return apply


def _set_field(row: int, field: int, value: str) -> Callable[[list[str]], None]:
    def edit(body: list[str]) -> None:
        parts = body[row].split(", ")
        parts[field] = value
        body[row] = ", ".join(parts)
    return edit


def _repeat_timestamp(row: int) -> Callable[[list[str]], None]:
    def edit(body: list[str]) -> None:
        body[row] = body[row - 1].split(",")[0] + "," + body[row].split(",", 1)[1]
    return edit


def _shuffle(body: list[str]) -> None:
    body[:] = list(np.random.default_rng(0).permutation(body))


# name: (sensor, transform of the text, expected reason kind, expected line, trial kept)
CORRUPTIONS = {
    "shuffled": ("acc", _edit_rows(_shuffle), "non-monotonic timestamps", None, False),
    "duplicate": ("gyro", _edit_rows(_repeat_timestamp(10)), "duplicate timestamps",
                  27, True),
    "nan": ("acc", _edit_rows(_set_field(20, 1, "NaN")), "non-finite values", 37, True),
    "inf": ("ori", _edit_rows(_set_field(3, 3, "-inf")), "non-finite values", 20, True),
    "no_data_marker": ("acc", lambda s: s.replace("@DATA\r\n", ""), "missing @DATA", 16,
                       False),
    "garbage_line": ("gyro", _edit_rows(lambda b: b.insert(5, "garbage here")),
                     "bad field count", 22, False),
    "bad_number": ("ori", _edit_rows(_set_field(7, 2, "1.2.3")), "unparsable number", 24,
                   False),
    "empty": ("acc", lambda s: s[:s.index("@DATA")] + "@DATA\r\n", "empty file", None, False),
    "zero_bytes": ("gyro", lambda s: "", "empty file", None, False),
    "header_mismatch": ("acc", lambda s: s.replace("12 - BSC", "10 - FOL"), "header mismatch",
                        None, False),
}


@pytest.fixture(params=sorted(CORRUPTIONS))
def corrupted(request, root: Path, tmp_path: Path):
    sensor, transform, kind, line, kept = CORRUPTIONS[request.param]
    for code, subject, trial in SMALL[:3]:
        _copy_trial(root, tmp_path, code, subject, trial)
    paths = _copy_trial(root, tmp_path, "BSC", 2, 1, new_trial=7)
    paths[sensor].write_bytes(transform(paths[sensor].read_bytes().decode()).encode())
    rel = paths[sensor].relative_to(tmp_path).as_posix()
    return tmp_path, rel, kind, line, kept


def test_bad_file_is_quarantined_with_file_and_problem(corrupted) -> None:
    folder, rel, kind, line, kept = corrupted
    ds = load(root=folder, verbose=False)
    q = ds.info["quarantine"]
    assert q.counts() == {kind: 1}, q.summary()
    record, reason = q.records[0]
    if line is None:
        assert record == rel
    else:  # parse errors point the record at the line, stream checks name it in the reason
        assert record == f"{rel}:{line}" or (record == rel and f"line {line}" in reason)
    assert reason.startswith(f"{kind}:")
    files = set(ds.splits["train"]["file"].tolist())
    assert ("sub2/FALLS/BSC/BSC_*_2_7.txt" in files) == kept
    assert ds.info["trials"]["skipped"] == (0 if kept else 1)


def test_bad_file_strict_raises(corrupted) -> None:
    folder, rel, kind, _, _ = corrupted
    with pytest.raises(BadRecordError, match=kind) as err:
        load(root=folder, strict=True, verbose=False)
    assert rel in str(err.value)


def test_bad_file_names_and_missing_sensor(root: Path, small_root: Path, tmp_path: Path) -> None:
    shutil.copytree(small_root, tmp_path, dirs_exist_ok=True)
    acc = root / "sub2/FALLS/BSC/BSC_acc_2_1.txt"
    (tmp_path / "sub2/ADL/XYZ").mkdir(parents=True)
    shutil.copyfile(acc, tmp_path / "sub2/ADL/XYZ/XYZ_acc_2_1.txt")
    shutil.copyfile(acc, tmp_path / "sub2/FALLS/BSC/notes.txt")
    (tmp_path / "sub3/ADL/SCH/SCH_gyro_3_1.txt").unlink()
    (tmp_path / "sub3/ADL/SCH/SCH_gyro_3_2.txt").write_bytes(b"")  # lone file of a trial
    q = Quarantine()
    found = find_trials(tmp_path, q)
    assert sorted(t.name for t in found) == ["BSC_2_1", "SCH_2_1", "SCH_4_1"]
    reasons = dict(q.records)
    assert reasons["sub2/ADL/XYZ/XYZ_acc_2_1.txt"].startswith("unknown activity code: 'XYZ'")
    assert reasons["sub2/FALLS/BSC/notes.txt"].startswith("unrecognised file name")
    assert reasons["sub3/ADL/SCH/SCH_gyro_3_1.txt"].startswith("missing file: trial SCH_3_1")
    assert "missing file" in reasons["sub3/ADL/SCH/SCH_ori_3_2.txt"]
    with pytest.raises(BadRecordError, match=r"XYZ_acc_2_1\.txt: unknown activity code"):
        find_trials(tmp_path, Quarantine(strict=True))


def test_parser_errors_name_file_and_line(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "BSC_acc_2_1.txt"
    text = (root / "sub2/FALLS/BSC/BSC_acc_2_1.txt").read_text()
    path.write_text(text.replace("@DATA", "@DATA\n1, 2, 3, 4\n12, x, 3, 4", 1))
    with pytest.raises(SensorFileError, match=r"BSC_acc_2_1\.txt:18: unparsable number: x 'x'"):
        read_sensor_file(path)
    path.write_text(text.replace("@DATA", "@DATA\n1.5, 2, 3, 4", 1))
    with pytest.raises(SensorFileError, match=r":17: unparsable number: timestamp_ns '1.5' is "
                                              "not an integer"):
        read_sensor_file(path)
    path.write_text(text.replace("@DATA", "@DATA\n1, 2, 3, 4\n\n5, 6, 7, 8", 1))
    with pytest.raises(SensorFileError, match=r":18: bad field count: 0 fields"):
        read_sensor_file(path)


# ---------------------------------------------------------------- download


def test_local_copy_matches_published_digest(root: Path) -> None:
    assert folder_digest(root, DATA_PATTERN) == SUBSET_DIGEST


def _zip(root: Path, archive: Path, files: list[Path]) -> None:
    prefix = f"MobiAct_Dataset_v2.0-MobiFall_Dataset_v2.0-{COMMIT}/"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(prefix + "Readme.txt", "not part of the subset")
        zf.write(files[0], prefix + "sub5/ADL/JOG/JOG_acc_5_1.txt")  # other subject: left out
        zf.write(files[0], prefix + "sub2/ADL/STD/STD_acc_2_1.txt")  # STD: left out
        for path in files:
            zf.write(path, prefix + path.relative_to(root).as_posix())


def test_download_keeps_and_verifies_the_subset(root: Path, tmp_path: Path) -> None:
    files = sorted(root.glob("sub*/*/*/*.txt"))
    archive = tmp_path / "archive.zip"
    _zip(root, archive, files)
    dest = download(tmp_path / "cache" / "mobifall_v2", url=archive.as_uri())
    assert folder_digest(dest, DATA_PATTERN) == SUBSET_DIGEST
    assert len(list(dest.rglob("*.txt"))) == 432
    _zip(root, archive, files[:-1])
    with pytest.raises(ValueError, match="folder digest"):
        download(tmp_path / "cache" / "other", url=archive.as_uri())
    assert not (tmp_path / "cache" / "other").exists()


# ---------------------------------------------------------------- full copy, leave-one-subject-out

ACTIVITY_SUBJECTS = [2, 3, 4, 5, 7, 8, 9, 10, 11]
FALLS_ONLY = [1, 6, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 29, 30, 31]


@pytest.fixture(scope="module")
def full_root(data_dir: Path) -> Path:
    return _folder(data_dir, FULL_SUBDIR, "MobiFall full copy")


def test_full_copy_trials_and_subject_21_sdl_in_fol_folder(full_root: Path) -> None:
    trials = find_trials(full_root)
    assert len(trials) == 612
    assert loso_subjects(trials) == ACTIVITY_SUBJECTS
    assert sorted({t.subject for t in trials} - set(ACTIVITY_SUBJECTS)) == FALLS_ONLY
    sdl21 = [t for t in trials if t.subject == 21 and t.code == "SDL"]
    assert [t.file for t in sdl21] == [f"sub21/FALLS/FOL/SDL_*_21_{k}.txt" for k in (1, 2, 3)]
    assert all(t.code == "FOL" for t in trials if t.subject == 21 and "SDL" not in t.file
               and "/FOL/" in t.file)


def test_fold_subjects_cover_every_activity_subject_once() -> None:
    subjects = sorted(ACTIVITY_SUBJECTS + FALLS_ONLY)
    tests, vals = [], []
    for fold in range(9):
        groups = fold_subjects(subjects, ACTIVITY_SUBJECTS, fold)
        assert set(FALLS_ONLY) <= set(groups["train"])
        assert sorted(groups["train"] + groups["val"] + groups["test"]) == subjects
        assert set(groups["val"]) <= set(ACTIVITY_SUBJECTS)
        tests += groups["test"]
        vals += groups["val"]
    assert tests == ACTIVITY_SUBJECTS and sorted(vals) == ACTIVITY_SUBJECTS
    assert fold_subjects(subjects, ACTIVITY_SUBJECTS, 8, val_subjects=2)["val"] == [2, 3]
    with pytest.raises(ValueError, match=r"fold must be in 0\.\.8 .*\[2, 3, 4"):
        fold_subjects(subjects, ACTIVITY_SUBJECTS, 9)
    with pytest.raises(ValueError, match=r"val_subjects must be in 1\.\.8"):
        fold_subjects(subjects, ACTIVITY_SUBJECTS, 0, val_subjects=9)


def test_full_loso_fold_loads_subject_disjoint_splits(full_root: Path, data_dir: Path) -> None:
    ds = load(full=True, fold=8, verbose=False)  # the copy under MMKERAS_DATA_DIR
    assert Path(ds.info["root"]) == full_root
    assert ds.info["fold"] == 8 and ds.info["trials"]["loaded"] == 612
    subjects = {s: set(a["subject"].tolist()) for s, a in ds.splits.items()}
    assert subjects == {"train": set(ACTIVITY_SUBJECTS[1:-1] + FALLS_ONLY), "val": {2},
                        "test": {11}}
    for name, arrays in ds.splits.items():
        assert set(np.unique(arrays["label"])) == set(range(11)), name
    train = ds.splits["train"]
    sdl21 = (train["subject"] == 21) & (train["label"] == CLASSES.index("SDL"))
    assert sdl21.sum() > 0
    assert set(train["file"][sdl21]) == {f"sub21/FALLS/FOL/SDL_*_21_{k}.txt"
                                                 for k in (1, 2, 3)}
    again = load(root=full_root, fold=8, verbose=False)  # parsed trials reused, same windows
    for name in ds.splits:
        np.testing.assert_array_equal(again.splits[name]["acc"], ds.splits[name]["acc"])
    with pytest.raises(ValueError, match="leave test_subject and val_subject unset"):
        load(root=full_root, fold=0, test_subject=4)


def test_shipped_loso_config_is_valid() -> None:
    from mmkeras.config import ConfigError, resolve_config

    path = Path(__file__).resolve().parents[1] / "data_pipelines/configs/mobifall_loso.yaml"
    cfg = resolve_config(path)
    assert cfg.dataset == "mobifall"
    assert cfg.dataset_args["full"] is True and cfg.dataset_args["fold"] == 0
    assert resolve_config(path, ["dataset_args.fold=5"]).dataset_args["fold"] == 5
    with pytest.raises(ConfigError, match=r"dataset_args\.fold"):
        resolve_config(path, ["dataset_args.fold=first"])
