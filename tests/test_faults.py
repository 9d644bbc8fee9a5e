"""Real runs of ``python -m mmkeras.train`` killed with SIGKILL, then the same command again.

(a) in the middle of an epoch, (b) right at epoch boundaries while the backup is written, (c)
after training, during evaluation and export, (d) as the folder's first file is written. Each
rerun must finish with a valid export, one history row per epoch, and never repeat finished work;
a run resumed mid-training ends with the same history and metrics as one never stopped. Also: a
non-finite loss fails the run and exports nothing; a finished, failed or differently configured
folder is refused, and so is a folder another run is writing; Ctrl-C is one line; a damaged
metrics.json is redone and a damaged model.keras refused in one line. TensorBoard's logs show
each kept epoch once, also after a resume that redid an epoch.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmkeras.training.callbacks import MANIFEST, read_history_csv
from tests.conftest import TINY_MACHINE, tensorboard_scalars

EPOCHS = 3
# verbose=2: one line per epoch ("Epoch 2/3"); single-line error checks pass verbose=1, which
# keeps TensorFlow's start-up chatter off stderr (verbose is not compared on resume)
BASE = [*(f"dataset_args.{k}={v}" for k, v in TINY_MACHINE.items()), f"epochs={EPOCHS}",
        "embed_dim=16", "batch_size=8", "verbose=2"]


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "MMKERAS_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONUNBUFFERED": "1"}  # the tests watch the run's log for "Epoch N/M"


def _start(out: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    path = out.parent / f"{out.name}-{time.monotonic_ns()}.log"
    log = open(path, "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "mmkeras.train", *BASE, *extra, "--output",
                             str(out)], stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=_env(cache_dir), cwd=out.parent)
    proc.log_path = path
    return proc


def _run(out: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmkeras.train", *BASE, *extra, "--output",
                           str(out)], capture_output=True, text=True, env=_env(cache_dir),
                          cwd=out.parent, timeout=900, check=False)


def _wait(proc: subprocess.Popen, condition, timeout: float = 600.0) -> None:
    """Poll ``condition`` about every millisecond until true; fail if the run ends first."""
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended (exit {proc.returncode}) before the kill point"
        assert time.monotonic() < end, "kill point not reached in time"
        time.sleep(0.001)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _manifest_epoch(out: Path) -> int:
    return (_json(out / "backup" / MANIFEST) or {}).get("epoch", 0)


def _stage(out: Path) -> str | None:
    return (_json(out / "state.json") or {}).get("stage")


def _assert_finished(out: Path) -> None:
    assert _stage(out) == "done"
    epochs = [int(float(r)) for r in _csv_column(out / "history.csv", "epoch")]
    assert epochs == list(range(EPOCHS)), epochs  # one row per epoch, none twice
    losses = read_history_csv(out / "history.csv")["loss"]
    assert all(math.isfinite(v) for v in losses)
    # TensorBoard: one point per kept epoch, as history.csv
    points = tensorboard_scalars(out / "tensorboard")[("train", "epoch_loss")]
    assert [step for step, _ in points] == list(range(EPOCHS)), points
    assert [value for _, value in points] == pytest.approx(losses)
    export = out / "export" / "mmkeras_model" / "1"
    assert (export / "saved_model.pb").is_file()
    report = json.loads((out / "export_validation.json").read_text())
    assert report["ok"] and report["export_dir"] == str(export)
    assert not (out / "backup").exists()
    assert not list(out.rglob(".tmp-*"))
    assert not list((out / "export").glob(".mmkeras-tmp/*"))  # export_run's temporary builds
    assert json.loads((out / "metrics.json").read_text())["num_examples"] > 0


def _csv_column(path: Path, name: str) -> list[str]:
    lines = path.read_text().splitlines()
    index = lines[0].split(",").index(name)
    return [line.split(",")[index] for line in lines[1:]]


def test_kill_mid_epoch_resumes_at_the_last_finished_epoch(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    # epoch 1 is backed up and epoch 2 has begun (epochs last well under a second here)
    _wait(proc, lambda: _manifest_epoch(out) >= 1 and "Epoch 2/" in proc.log_path.read_text())
    _kill(proc)
    assert _manifest_epoch(out) == 1, "the kill was meant to land inside epoch 2"
    rows_before = read_history_csv(out / "history.csv")["loss"]
    assert len(rows_before) == 1

    other = _run(out, cache_dir, "epochs=4", "fusion=gated", "verbose=1")  # verbose: ignored
    assert other.returncode == 2, other.stderr[-2000:]
    assert other.stderr.count("\n") == 1 and "epochs: 3 -> 4" in other.stderr
    assert "fusion: 'sum' -> 'gated'" in other.stderr

    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    steps = math.ceil(json.loads((out / "metrics.json").read_text())["train_examples"] / 8)
    assert f"1 epochs finished, optimizer step {steps}" in again.stdout
    assert "Epoch 1/3" not in again.stdout and "Epoch 2/3" in again.stdout
    _assert_finished(out)
    assert read_history_csv(out / "history.csv")["loss"][0] == rows_before[0]

    finished = _run(out, cache_dir, "verbose=0")
    assert finished.returncode == 2 and "finished run: use --overwrite" in finished.stderr
    assert finished.stderr.count("\n") == 1


def test_kill_at_epoch_boundaries_while_the_backup_is_written(tmp_path, cache_dir):
    out = tmp_path / "run"
    caught = []
    for boundary in (1, 2):
        proc = _start(out, cache_dir)

        def writing(boundary=boundary) -> bool:
            try:
                names = [e.name for e in os.scandir(out / "backup")]
            except FileNotFoundError:
                return False
            return any(n.startswith(".tmp-") and n.endswith(f"epoch-{boundary}.weights.h5")
                       for n in names) or _manifest_epoch(out) >= boundary

        _wait(proc, writing)
        _kill(proc)
        caught.append(_manifest_epoch(out) < boundary)  # killed before the manifest was done
        assert _manifest_epoch(out) in (boundary - 1, boundary)
    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _assert_finished(out)
    print(f"kills that landed while the backup was being written: {caught}")


def test_kill_after_training_does_not_train_again(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    _wait(proc, lambda: _stage(out) in ("trained", "evaluated", "done"))
    _kill(proc)
    assert _stage(out) in ("trained", "evaluated"), "killed too late: the run had finished"
    history = (out / "history.csv").read_bytes()
    model = (out / "model.keras").stat()
    trained_at = [e["time"] for e in _json(out / "state.json")["events"]
                  if e["stage"] == "trained"]

    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Epoch " not in again.stdout  # no training at all
    _assert_finished(out)
    assert (out / "history.csv").read_bytes() == history
    assert (out / "model.keras").stat().st_mtime_ns == model.st_mtime_ns
    events = _json(out / "state.json")["events"]
    assert [e["stage"] for e in events].count("training") == 1
    assert [e["time"] for e in events if e["stage"] == "trained"] == trained_at

    # --overwrite clears the finished run; a non-finite loss then fails it, exporting nothing
    nan = _run(out, cache_dir, "--overwrite", "learning_rate=1e30", "verbose=1")
    # the last stderr line (Keras warnings may come before it)
    assert nan.returncode == 1, nan.stdout[-3000:] + nan.stderr[-3000:]
    assert nan.stderr.splitlines()[-1].startswith("error: non-finite training loss (nan) at "
                                                  "epoch 1, batch ")
    state = _json(out / "state.json")
    assert state["stage"] == "failed" and "non-finite" in state["error"]
    assert not (out / "export").exists() and not (out / "model.keras").exists()
    assert not (out / "metrics.json").exists()
    refused = _run(out, cache_dir, "learning_rate=1e30", "verbose=1")
    assert refused.returncode == 2 and "failed run" in refused.stderr


@pytest.mark.parametrize("folder", ["file", "stranger"])
def test_unusable_output_is_refused_before_any_work(tmp_path, cache_dir, folder):
    out = tmp_path / folder
    if folder == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    proc = _run(out, cache_dir, "verbose=1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert str(out) in proc.stderr and "choose another --output" in proc.stderr


def test_kill_as_the_run_folder_is_first_written_resumes(tmp_path, cache_dir):
    # the very first file a run writes (state.json, under a temporary name) has appeared: a kill
    # here left config.yaml without state.json, and the same command was refused for good
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    _wait(proc, lambda: out.is_dir() and any(os.scandir(out)))
    _kill(proc)
    assert _manifest_epoch(out) == 0
    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _assert_finished(out)


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, cache_dir):
    out = tmp_path / "run"
    first = _start(out, cache_dir)
    _wait(first, lambda: "Epoch 1/" in first.log_path.read_text())
    second = _run(out, cache_dir, "verbose=1")  # same command while the first one trains
    assert second.returncode == 2, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stderr.count("\n") == 1 and "is in use by another running process" in \
        second.stderr, second.stderr[-2000:]
    assert "Epoch " not in second.stdout
    # the first run was not disturbed; once it is killed (SIGKILL frees the lock), the same
    # command resumes the folder
    _wait(first, lambda: _manifest_epoch(out) >= 1)
    _kill(first)
    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Epoch 1/3" not in again.stdout
    _assert_finished(out)


def test_a_resumed_run_ends_as_one_never_stopped(tmp_path, cache_dir):
    # same seed: the epochs trained after the resume see the same shuffled batches and dropout
    # masks as in an uninterrupted run, so history and test metrics are identical
    reference = tmp_path / "reference"
    done = _run(reference, cache_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    _wait(proc, lambda: _manifest_epoch(out) >= 1 and "Epoch 2/" in proc.log_path.read_text())
    _kill(proc)
    assert _manifest_epoch(out) == 1, "the kill was meant to land inside epoch 2"
    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _assert_finished(out)
    ours, theirs = read_history_csv(out / "history.csv"), read_history_csv(reference /
                                                                            "history.csv")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ours[key] == theirs[key], key
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]


def test_ctrl_c_is_one_line_and_the_same_command_resumes(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    _wait(proc, lambda: _manifest_epoch(out) >= 1 and "Epoch 2/" in proc.log_path.read_text())
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    log = proc.log_path.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert log.splitlines()[-1] == (f"interrupted: run it again with --output {out} (same "
                                    "config) to resume from the last finished epoch or stage")
    assert not list(out.rglob(".tmp-*"))  # Ctrl-C lets the temporary files be removed
    again = _run(out, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Epoch 1/3" not in again.stdout
    _assert_finished(out)


def test_damaged_files_of_a_trained_run_are_one_line_or_redone(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = _start(out, cache_dir)
    _wait(proc, lambda: _stage(out) == "evaluated")
    _kill(proc)
    damaged = tmp_path / "damaged-model"
    shutil.copytree(out, damaged)
    for path in (out / "metrics.json", damaged / "model.keras"):
        with open(path, "r+b") as f:  # truncated (a full disk, a bad copy...)
            f.truncate(path.stat().st_size // 2)
    refused = _run(damaged, cache_dir, "verbose=1")
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
    assert "model.keras is not a complete .keras file" in refused.stderr
    assert "train the run again (python -m mmkeras.train --output DIR --overwrite)" in \
        refused.stderr
    again = _run(out, cache_dir)  # metrics.json damaged: evaluated again, not trained again
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "metrics.json is missing or damaged: evaluating again" in again.stderr
    assert "Epoch " not in again.stdout
    _assert_finished(out)
