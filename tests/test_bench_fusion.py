"""benchmarks/bench_fusion.py, reduced: 1 seed, 2 epochs, two fusions, one modality alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MACHINE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fusion.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(value: str) -> tuple[float, float]:
    mean, std = (float(x) for x in value.split("±"))
    return mean, std


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables as rows of cells, the separator row left out."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def _tiny_machine_argv(tmp_path: Path, out: Path, *options: str) -> list[str]:
    """bench_fusion arguments for the tiny machine dataset: ``options``, then work, out, sizes."""
    return ["--dataset", "machine", *options, "--work", str(tmp_path / "runs"), "--out", str(out),
            *(f"--set=dataset_args.{k}={str(v).lower()}" for k, v in TINY_MACHINE.items())]


def test_reduced_benchmark_on_machine(bench, cache_dir, tmp_path, capsys):
    out = tmp_path / "fusion.md"
    argv = _tiny_machine_argv(tmp_path, out, "--seeds", "1", "--epochs", "2", "--fusions",
                              "sum,early", "--modalities", "environment",
                              "--set", "modalities=[environment,notes]")
    assert bench.main(argv) == 0
    text = out.read_text()
    assert text.startswith("`python benchmarks/bench_fusion.py --dataset machine")
    main, absent, per_class = _tables(text)
    assert main[0][:4] == ["model", "runs", "test accuracy", "macro-F1"]
    names = [row[0] for row in main[1:]]
    assert [n.split(" (")[0] for n in names] == ["environment alone", "sum", "early"]
    assert names[1].startswith("sum") and names[1].endswith("(default)")
    assert sum("(lowest val loss)" in n for n in names) == 1  # one fusion, never a modality
    for row in main[1:]:
        assert row[1] == "1"  # runs
        (accuracy, std), (f1, _) = _cell(row[2]), _cell(row[3])
        assert 0.0 <= accuracy <= 1.0 and 0.0 <= f1 <= 1.0 and std == 0.0
        assert _cell(row[4])[0] > 0 and 0.0 <= _cell(row[5])[0] <= 1.0  # val loss, val acc
        assert int(row[6].replace(",", "")) > 1000  # parameters
        assert float(row[7]) > 0 and float(row[8]) > 0 and float(row[9]) > 0
    assert absent[0] == ["fusion", "all present", "environment absent", "notes absent"]
    assert [row[0] for row in absent[1:]] == ["sum", "early"]
    assert all(0.0 <= float(c) <= 1.0 for row in absent[1:] for c in row[1:])
    assert per_class[0] == ["model", "normal", "bearing_wear", "imbalance", "overheating"]
    assert all(0.0 <= float(c) <= 1.0 for row in per_class[1:] for c in row[1:])
    assert "chosen on validation (lowest mean val loss)" in text
    assert "ratio best fusion / best alone" in text
    records = [json.loads(x) for x in out.with_suffix(".runs.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["name"]) for r in records] == [
        ("alone", "environment"), ("fusion", "sum"), ("fusion", "early")]
    for r in records:
        assert r["epochs_run"] == 2 and r["train_s"] > 0 and r["params"] > 0
        assert r["modalities"] == (["environment"] if r["kind"] == "alone"
                                   else ["environment", "notes"])
        assert set(r["per_class_f1"]) == {"normal", "bearing_wear", "imbalance", "overheating"}
    # The same command again reuses the finished runs: same table, no new training.
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert "] test acc" not in capsys.readouterr().out  # "[run] test acc": new runs only
    again = out.read_text()
    assert again.split("\n", 1)[1] == text.split("\n", 1)[1]
    # Killed while writing the last record: the torn line is reported and cut off, and only
    # that run is redone.
    log = out.with_suffix(".runs.jsonl")
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    capsys.readouterr()
    assert bench.main(argv) == 0
    printed = capsys.readouterr()
    assert f"{log}:3: a torn record" in printed.err
    assert printed.out.count("] test acc") == 1
    assert "[fusion-early-fNone-s0] test acc" in printed.out
    redone = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["name"] for r in redone] == ["environment", "sum", "early"]
    assert redone[:2] == records[:2]


def test_run_log_damage(bench, tmp_path, capsys):
    """A torn last record is cut off (reported, its run redone); a record that lost only its
    newline is kept and the newline restored; a bad line before the last is an error naming it."""
    log = tmp_path / "fusion.runs.jsonl"
    good = [json.dumps({"key": {"seed": i}, "accuracy": 0.5}) + "\n" for i in range(3)]
    assert bench.read_log(log) == []
    log.write_text(good[0] + good[1] + good[2][:20])
    assert [r["key"]["seed"] for r in bench.read_log(log)] == [0, 1]
    assert log.read_text() == good[0] + good[1]
    assert f"{log}:3: a torn record" in capsys.readouterr().err
    log.write_text(good[0] + good[1].rstrip("\n"))
    assert len(bench.read_log(log)) == 2 and log.read_text() == good[0] + good[1]
    log.write_text(good[0] + "\n" + good[1])
    with pytest.raises(SystemExit, match=rf"{log}:2: not a run record"):
        bench.read_log(log)
    log.write_text(good[0] + "[1, 2]\n" + good[1])
    with pytest.raises(SystemExit, match=r":2: not a run record \(a JSON object with a 'key'"):
        bench.read_log(log)


def test_cli_errors_are_one_line(tmp_path):
    """An unknown dataset or a bad override is one line on stderr, exit 2, before any training."""
    for args, message in [(["--dataset", "nope"], "invalid choice: 'nope'"),
                          (["--set", "epochs=abc"], "error: config field 'epochs'='abc'")]:
        done = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "b.md")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and message in done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "b.md").exists()


def test_kept_epoch_reads_the_fused_head_when_unimodal_heads_train_too(bench):
    """With unimodal heads the fused head's metrics are named after its output and the total
    validation loss also counts the heads: the table reports the fused head at the kept epoch."""
    plain = {"val_loss": [0.9, 0.5, 0.7], "val_accuracy": [0.5, 0.8, 0.7]}
    assert bench._kept_epoch(plain, early_stopping=5) == (0.5, 0.8)
    assert bench._kept_epoch(plain, early_stopping=0) == (0.7, 0.7)
    heads = {"val_loss": [1.2, 0.8, 0.9], "val_probabilities_loss": [0.6, 0.4, 0.3],
             "val_probabilities_accuracy": [0.7, 0.9, 0.95]}
    assert bench._kept_epoch(heads, early_stopping=5) == (0.4, 0.9)  # kept on the total loss


def test_a_fusion_the_config_cannot_build_is_reported_not_run(bench, cache_dir, tmp_path, capsys):
    """Unimodal heads need an intermediate fusion: a late fusion is listed as not run, with the
    reason, and the benchmark goes on (here nothing else was asked for, so it exits 1)."""
    out = tmp_path / "fusion.md"
    argv = _tiny_machine_argv(tmp_path, out, "--seeds", "2", "--epochs", "1", "--fusions",
                              "late_mean", "--modalities", "none",
                              "--set", "tasks.label.unimodal_loss_weight=0.3")
    assert bench.main(argv) == 1
    printed = capsys.readouterr().out
    assert printed.count("not run:") == 1  # tried once, not once per seed
    assert ("[fusion-late_mean-fNone-s0] not run: this config cannot build its model: unimodal "
            "heads need an intermediate fusion") in printed
    text = out.read_text()
    assert "Not run (the model cannot be built with this config):" in text
    assert "- late_mean: this config cannot build its model: unimodal heads need" in text
    assert "tasks.label.unimodal_loss_weight=0" in text
    assert not out.with_suffix(".runs.jsonl").exists()
