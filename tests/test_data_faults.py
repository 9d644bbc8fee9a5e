"""Data faults are quarantined per record (``--strict`` stops on them); empty data is one line.

Real files written in tmp: float WAVs with NaN/inf samples, a MobiFall sensor file with a
1e300 reading (inf in float32), empty recordings folders.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import avdigits, mobifall
from mmkeras.data.audio import read_audio
from mmkeras.data.quarantine import BadRecordError, EmptyDataError
from mmkeras.train import main

CONFIGS = Path(__file__).parents[1] / "data_pipelines" / "configs"
NAN_CLIP, INF_CLIP = "3_theo_1.wav", "4_yweweler_2.wav"
TRIALS = [("SCH", s, 1) for s in (2, 3, 4)] + [("BSC", 2, 1)]


def _float_wav(path: Path, bad: float, at: int = 100) -> None:
    clip = np.sin(np.linspace(0, 200, 4000)).astype(np.float32) * 0.5
    clip[at] = bad
    sf.write(path, clip, 8000, subtype="FLOAT")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_audio_refuses_non_finite_samples(tmp_path, bad):
    _float_wav(tmp_path / "x.wav", bad, at=123)
    with pytest.raises(ValueError, match=r"x\.wav: non-finite samples: 1 frame.*frame 123"):
        read_audio(tmp_path / "x.wav")


@pytest.fixture
def fsdd_subset(data_dir, tmp_path, monkeypatch):
    """Three clips per digit and speaker (symlinks), two replaced by float WAVs with NaN/inf."""
    root = tmp_path / "data"
    recordings = root / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    (root / "mnist").symlink_to(data_dir / "mnist")
    for src in (data_dir / "fsdd" / "recordings").glob("*_[012].wav"):
        (recordings / src.name).symlink_to(src)
    for name, bad in ((NAN_CLIP, np.nan), (INF_CLIP, np.inf)):
        (recordings / name).unlink()
        _float_wav(recordings / name, bad)
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(root))
    return recordings


def test_non_finite_wav_is_quarantined_and_strict_stops(fsdd_subset):
    ds = avdigits.load()
    records = dict(ds.info["quarantine"].records)
    assert set(records) == {str(fsdd_subset / NAN_CLIP), str(fsdd_subset / INF_CLIP)}
    assert all(r.startswith("non-finite samples: 1 frame(s)") for r in records.values())
    assert ds.num_examples("val") == 29 and ds.num_examples("test") == 29
    assert all(np.isfinite(ds.splits[s]["audio"]).all() for s in ("train", "val", "test"))
    with pytest.raises(BadRecordError, match=rf"{NAN_CLIP}: non-finite samples"):
        avdigits.load(strict=True)


def test_empty_recordings_folder_is_one_line_naming_it(fsdd_subset, tmp_path, capsys):
    for path in fsdd_subset.iterdir():
        path.unlink()
    with pytest.raises(EmptyDataError, match=rf"{fsdd_subset}: no usable examples"):
        avdigits.load()
    code = main(["--config", str(CONFIGS / "avdigits.yaml"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {fsdd_subset}: no usable examples")


def test_missing_split_is_one_line_naming_folder_and_split(fsdd_subset):
    for path in fsdd_subset.glob("*_yweweler_*.wav"):
        path.unlink()
    with pytest.raises(EmptyDataError, match=rf"{fsdd_subset}: split 'test' has no examples"):
        avdigits.load()


@pytest.fixture
def mobifall_root(data_dir, tmp_path):
    """Four real MobiFall trials copied into tmp; one acc reading set to 1e300."""
    src, dst = data_dir / mobifall.SUBDIR, tmp_path / "mobifall"
    for code, subject, trial in TRIALS:
        for path in src.glob(f"sub{subject}/*/{code}/{code}_*_{subject}_{trial}.txt"):
            (dst / path.relative_to(src).parent).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / path.relative_to(src))
    acc = next(dst.glob("sub2/*/BSC/BSC_acc_2_1.txt"))
    lines = acc.read_text().splitlines(keepends=True)
    row = lines.index("@DATA\n" if "@DATA\n" in lines else "@DATA\r\n") + 11
    fields = lines[row].split(",")
    fields[2] = " 1e300"
    lines[row] = ",".join(fields)
    acc.write_text("".join(lines))
    return dst, acc.relative_to(dst).as_posix(), row + 1


def test_absurd_sensor_value_is_quarantined_with_its_file(mobifall_root):
    root, rel, line = mobifall_root
    ds = mobifall.load(root=root, window_s=1.0, hop_s=0.5, verbose=False)
    q = ds.info["quarantine"]
    assert q.counts() == {"absurd values": 1}
    record, reason = q.records[0]
    assert record == rel and f"first at line {line} (1e+300)" in reason
    for split in ds.splits.values():
        for name in ("acc", "gyro", "ori"):
            assert np.isfinite(split[name].astype(np.float32)).all()
    assert "sub2/FALLS/BSC/BSC_*_2_1.txt" in set(ds.splits["train"]["file"].tolist())


def test_absurd_sensor_value_stops_strict_cli(mobifall_root, tmp_path, capsys):
    root, rel, _ = mobifall_root
    with pytest.raises(BadRecordError, match=rf"{rel}: absurd values"):
        mobifall.load(root=root, strict=True, verbose=False)
    code = main(["--config", str(CONFIGS / "mobifall.yaml"), "--strict",
                 f"dataset_args.root={root}", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and rel in err[0] and "absurd values" in err[0]


def test_empty_or_split_less_mobifall_folder(mobifall_root, tmp_path):
    root, _, _ = mobifall_root
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDataError, match=r"empty: no complete MobiFall trials"):
        mobifall.load(root=tmp_path / "empty", verbose=False)
    shutil.rmtree(root / "sub4")
    with pytest.raises(EmptyDataError, match=rf"{root}: split 'test' is empty: test_subject=4"):
        mobifall.load(root=root, verbose=False)
