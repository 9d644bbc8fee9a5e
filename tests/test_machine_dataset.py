"""The embedded ``machine`` dataset: deterministic generation, raw logger runs, aligned windows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_pipelines import machine
from data_pipelines.machine import CLASSES, CLOCKS, STREAM_RATES, generate, load_run, load_windows

TINY = {"n_machines": 4, "runs_per_machine": 2, "duration_s": 12.0, "progress": False}
N_RUNS, WINDOWS_PER_RUN = 8, 5  # windows end at 8, 9, ..., 12 s (8 s environment lookback)
CHANNELS = {"vibration": 3, "audio": 1, "environment": 2}


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _seconds(t_ns: np.ndarray, rec: machine.Recording, clock: str) -> np.ndarray:
    """Logger timestamps -> seconds since the run start on the reference clock."""
    return (t_ns - rec.start_ns - round(rec.offsets_s[clock] * 1e9)) / 1e9


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("machine"), seed=0, **TINY)


@pytest.fixture(scope="module")
def windows(folder: Path) -> dict[str, np.ndarray]:
    return load_windows(folder, progress=False)


def test_same_seed_gives_same_bytes_and_another_seed_differs(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE", str(tmp_path / "env"))
    again = generate(seed=0, **TINY)  # no cache_dir: $MMKERAS_CACHE
    assert again == tmp_path / "env" / "datasets" / "machine-v1-s0-m4-r2-d12"
    assert folder.name == again.name
    reference = _digests(folder)
    assert len(reference) == N_RUNS * 7 + 2  # 6 arrays + notes per run, runs.csv, marker
    assert _digests(again) == reference
    other = _digests(generate(tmp_path, seed=1, **TINY))
    assert other.keys() == reference.keys()
    arrays = [name for name in reference if name.endswith(".npy")]
    assert all(other[name] != reference[name] for name in arrays)


def test_complete_folder_is_reused_and_no_temp_folder_is_left(folder):
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert generate(folder.parent.parent, seed=0, **TINY) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_invalid_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_machines"):
        generate(tmp_path, n_machines=0, progress=False)


def test_layout_and_dtypes(folder):
    rows = machine.read_index(folder)
    offsets = [f"offset_{c}_s" for c in CLOCKS]
    columns = ["run_id", "machine_id", "label", "duration_s", "start_ns", *offsets, "path"]
    assert list(rows[0]) == columns
    assert (folder / machine.MARKER).is_file() and len(rows) == N_RUNS
    stored = {"vibration": np.float32, "audio": np.int16, "environment": np.float32}
    for row in rows:
        run = folder / row["path"]
        for name, channels in CHANNELS.items():
            t, x = np.load(run / f"{name}_t.npy"), np.load(run / f"{name}_x.npy")
            assert t.dtype == np.int64 and t.ndim == 1
            assert x.dtype == stored[name] and x.shape == (t.size, channels)
        lines = (run / "notes.jsonl").read_text(encoding="utf-8").splitlines()
        notes = [json.loads(line) for line in lines]
        assert notes and all(set(n) == {"t_ns", "text"} and n["text"] for n in notes)
        assert all(isinstance(n["t_ns"], int) for n in notes)

    rec = load_run(folder, "m001-r1")
    assert (rec.run_id, rec.machine_id) == ("m001-r1", "m001")
    assert CLASSES[rec.label] == rows[3]["label"]
    for name, (t, x) in rec.streams.items():
        assert t.dtype == np.int64 and x.dtype == np.float32 and x.shape == (t.size, CHANNELS[name])
    audio = rec.streams["audio"][1]
    assert -1 <= audio.min() < 0 < audio.max() < 1
    assert rec.notes[0].dtype == np.int64 and len(rec.notes[1]) == rec.notes[0].size
    with pytest.raises(KeyError, match="m9"):
        load_run(folder, "m9-r0")


def test_clock_offsets_jitter_and_dropped_samples(folder):
    long_gaps = 0
    env_samples = 0
    for row in machine.read_index(folder):
        rec = load_run(folder, row["run_id"])
        offsets = [rec.offsets_s[c] for c in CLOCKS]
        assert all(abs(o) <= 0.5 for o in offsets) and len(set(offsets)) == len(CLOCKS)
        for name, rate in STREAM_RATES.items():
            t = _seconds(rec.streams[name][0], rec, name)
            assert -0.5 / rate < t.min() and t.max() < TINY["duration_s"]
            steps = t * rate  # after subtracting the offset, samples sit near the nominal grid
            assert np.abs(steps - np.rint(steps)).max() < 0.4
            period = np.diff(t) * rate
            if name == "environment":
                env_samples += t.size
                continue
            assert t.size < TINY["duration_s"] * rate  # dropped samples
            adjacent = period[period < 1.5]
            assert 0.03 < adjacent.std() < 0.12  # jitter: N(0, 5%) per timestamp
            assert period.max() >= 2  # a dropped sample
            long_gaps += int((period > 0.01 * rate).sum())  # gaps over 10 ms
        note_t = _seconds(rec.notes[0], rec, "notes")
        assert 0 <= note_t[0] <= 0.5 and np.all((np.diff(note_t) >= 8) & (np.diff(note_t) <= 12))
    assert long_gaps > 0
    assert env_samples < N_RUNS * TINY["duration_s"]  # the environment logger missed readings


def test_load_windows_shapes_and_dtypes(windows):
    n = N_RUNS * WINDOWS_PER_RUN
    expected = {
        "vibration": ((n, 1000, 3), np.float32),
        "audio": ((n, 8000), np.float32),
        "environment": ((n, 8, 2), np.float32),
        "label": ((n,), np.int32),
        "end_s": ((n,), np.float64),
    }
    for key, (shape, dtype) in expected.items():
        assert windows[key].shape == shape and windows[key].dtype == dtype, key
        assert np.isfinite(windows[key]).all(), key
    for key in ("notes", "machine_id", "run_id"):
        assert windows[key].shape == (n,)
        assert all(isinstance(v, str) and v for v in windows[key].tolist()), key
    np.testing.assert_array_equal(windows["end_s"], np.tile(np.arange(8.0, 13.0), N_RUNS))
    assert np.abs(windows["audio"]).max() <= 1


def test_windows_are_the_offset_corrected_streams(folder, windows):
    rec = load_run(folder, "m002-r0")
    mine = windows["run_id"] == "m002-r0"
    for name, rate in STREAM_RATES.items():
        t_ns, x = rec.streams[name]
        got = windows[name][mine].reshape(WINDOWS_PER_RUN, -1, CHANNELS[name])
        grid = windows["end_s"][mine, None] + (np.arange(-got.shape[1], 0) / rate)[None]

        def resampled(t: np.ndarray, x: np.ndarray = x, grid: np.ndarray = grid) -> np.ndarray:
            return np.stack([np.interp(grid, t, x[:, c]) for c in range(x.shape[1])], axis=-1)

        corrected = resampled(_seconds(t_ns, rec, name))
        assert np.isclose(got, corrected, atol=1e-4).mean() > 0.98, name
        if name != "environment":  # ignoring the clock offset misaligns the fast streams
            raw = resampled((t_ns - rec.start_ns) / 1e9)
            assert np.isclose(got, raw, atol=1e-4).mean() < 0.5, name


def test_each_window_gets_the_latest_note_at_or_before_its_end(folder, windows):
    for row in machine.read_index(folder):
        rec = load_run(folder, row["run_id"])
        note_t = _seconds(rec.notes[0], rec, "notes")
        mine = windows["run_id"] == row["run_id"]
        for end, text in zip(windows["end_s"][mine], windows["notes"][mine], strict=True):
            assert text == rec.notes[1][np.flatnonzero(note_t <= end)[-1]]


def test_labels_are_balanced_and_a_machines_runs_differ(folder, windows):
    rows = machine.read_index(folder)
    assert Counter(r["label"] for r in rows) == dict.fromkeys(CLASSES, 2)
    per_machine: dict[str, set[str]] = {}
    for r in rows:
        per_machine.setdefault(r["machine_id"], set()).add(r["label"])
    assert all(len(labels) == TINY["runs_per_machine"] for labels in per_machine.values())
    assert np.bincount(windows["label"]).tolist() == [2 * WINDOWS_PER_RUN] * len(CLASSES)
    run_label = {r["run_id"]: CLASSES.index(r["label"]) for r in rows}
    assert [run_label[r] for r in windows["run_id"]] == windows["label"].tolist()


def test_load_splits_by_machine_with_model_specs(tiny_machine):
    specs = tiny_machine.modalities
    assert list(specs) == ["vibration", "audio", "environment", "notes"]
    assert [s.kind for s in specs.values()] == ["timeseries", "audio", "timeseries", "text"]
    assert specs["vibration"].shape == (1000, 3) and specs["environment"].shape == (8, 2)
    assert specs["audio"].shape == (8000,) and specs["audio"].options["sample_rate"] == 8000
    assert tiny_machine.class_names == list(CLASSES)
    for name, arrays in tiny_machine.splits.items():
        assert sorted(set(arrays["machine_id"])) == tiny_machine.info["machines"][name]
        assert np.unique(np.bincount(arrays["label"], minlength=4)).size == 1, name
