"""Evaluation and the run card of a prepared (sharded) dataset stream: no split is read whole.

The prepared folder is the embedded machine dataset at a small size written as "your own
data" (one manifest row per run, ``.npy`` streams of rows ``t, v_1 .. v_C`` as in
``benchmarks/bench_prepare.py``) and prepared on the in-process DirectRunner in 3 shards per
split. Every expected number is recomputed from a full in-memory read
(``PreparedDataset.splits``) done here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mmkeras.data.prepared import PreparedDataset
from mmkeras.evaluation.predict import predict

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
MODALITIES = ["vibration", "environment"]
SIZE = {"n_machines": 12, "runs_per_machine": 2, "duration_s": 14.0, "progress": False}
SCHEMA = """\
name: machine_prepared
modalities:
  vibration: {kind: stream, channels: 3, align: {method: linear, tolerance: 0.0025}}
  environment: {kind: stream, channels: 2, align: {method: linear, tolerance: 2.5}}
label: {column: condition, classes: [normal, bearing_wear, imbalance, overheating]}
split:
  column: machine_id
  fractions: {train: 1, val: 0, test: 0}
  assign: {val: [m000, m001], test: [m002, m003, m004]}
timeline: {rate_hz: 1000, time_unit: s}
window: {length_s: 1.0, hop_s: 1.0, min_presence: 0.8}
"""


def write_manifest(raw: Path, folder: Path) -> None:
    """One manifest row per run of ``raw`` (a ``machine.generate`` folder), one ``.npy`` per
    stream: seconds since the run start on the reference clock, then the values."""
    from data_pipelines import machine

    (folder / "streams").mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "machine_id", "condition", *(f"{s}_path" for s in MODALITIES)])
        for row in machine.read_index(raw):
            paths = []
            for stream in MODALITIES:
                t_ns = np.load(raw / row["path"] / f"{stream}_t.npy")
                x = np.load(raw / row["path"] / f"{stream}_x.npy")
                t = (t_ns - int(row["start_ns"])) / 1e9 - float(row[f"offset_{stream}_s"])
                paths.append(f"streams/{row['run_id']}_{stream}.npy")
                np.save(folder / paths[-1], np.column_stack([t, x.astype(np.float64)]))
            writer.writerow([row["run_id"], row["machine_id"], row["label"], *paths])


@pytest.fixture(scope="module")
def prepared(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Machines m000-m001 in val, m002-m004 in test, m005-m011 in train."""
    from data_pipelines import machine
    from mmkeras.data.beam_prepare import prepare

    folder = tmp_path_factory.mktemp("machine_manifest")
    write_manifest(machine.generate(cache_dir, **SIZE), folder)
    (folder / "schema.yaml").write_text(SCHEMA)
    out = folder / "prepared"
    prepare(folder / "manifest.csv", folder / "schema.yaml", out, IN_PROCESS, num_shards=3)
    return out


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    """One training job (fit, evaluation, export) on a dataset object the tests inspect."""
    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import train

    dataset = PreparedDataset(prepared)
    cfg = resolve_config(None, [
        "dataset=prepared", f"dataset_args.path={prepared}", "epochs=1", "batch_size=16",
        "verbose=0", "embed_dim=16", "strategy=default",
        f"output={tmp_path_factory.mktemp('run') / 'run'}",
    ])
    return dataset, train(cfg, dataset=dataset)


@pytest.fixture(scope="module")
def test_split(prepared: Path) -> dict[str, np.ndarray]:
    """The whole test split in memory, read by this test (the explicit ``splits`` API)."""
    full = PreparedDataset(prepared)
    arrays = dict(full.splits["test"])
    assert full.loaded_splits == ["test"]
    return arrays


def _probabilities(model, arrays: dict[str, np.ndarray]) -> np.ndarray:
    inputs = {name: arrays[name] for name in MODALITIES}
    return predict(model, inputs, batch_size=32)["probabilities"]


def test_training_job_streams_test_metrics_and_examples(trained, test_split) -> None:
    from mmkeras.training.trainer import _batched_predict

    dataset, result = trained
    assert dataset.loaded_splits == []  # fit, metrics, examples.npz, evaluation.json: streamed
    y = test_split["label"]
    assert len(y) == dataset.num_examples("test") > 64
    probabilities = _probabilities(result.model, test_split)
    predicted = probabilities.argmax(-1)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predicted == y)), abs=1e-12)
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (y, predicted), 1)
    assert metrics["confusion_matrix"] == confusion.tolist()

    # one streamed pass gives each example's probabilities with its own label, in stored order
    # (a 1-epoch model may predict one class for all: the probabilities still tell examples apart)
    streamed, labels = _batched_predict(result.model, dataset, "test", 16)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(streamed, probabilities, rtol=1e-5, atol=1e-6)
    assert dataset.loaded_splits == []

    examples = np.load(result.run_dir / "examples.npz")
    assert sorted(examples.files) == sorted(["label", *MODALITIES])
    np.testing.assert_array_equal(examples["label"], y[:64])
    for name in MODALITIES:
        np.testing.assert_array_equal(examples[name], test_split[name][:64])

    report = json.loads((result.run_dir / "evaluation.json").read_text())  # under 2000: all
    assert report["subset"] == {"examples": len(y), "of": len(y),
                                "how": "all examples of the sharded split, streamed"}
    assert report["metrics"]["accuracy"] == metrics["accuracy"]
    assert json.loads((result.run_dir / "export_validation.json").read_text())["ok"]


def test_evaluate_cli_on_a_prepared_run_uses_a_streamed_sample(
    trained, test_split, prepared: Path, capsys: pytest.CaptureFixture
) -> None:
    from mmkeras.evaluate import main
    from mmkeras.evaluation.report import evaluate_run

    _, result = trained
    n, total = 12, len(test_split["label"])
    argv = ["--run", str(result.run_dir), "--levels", "1", "--seed", "3", "--max-examples",
            str(n)]
    assert main(argv) == 0
    assert f"{n} examples of {total} (uniform random sample" in capsys.readouterr().out
    report = json.loads((result.run_dir / "evaluation.json").read_text())
    assert report["subset"]["examples"] == n and report["subset"]["of"] == total
    assert "reservoir sampling" in report["subset"]["how"] and "seed 3" in report["subset"]["how"]

    # the CLI evaluated exactly the sample PreparedDataset.sample draws, in stored order
    sample, seen = PreparedDataset(prepared).sample("test", n, seed=3)
    assert seen == total
    position = {(r, s): i for i, (r, s) in enumerate(zip(test_split["row"],
                                                         test_split["start_s"], strict=True))}
    rows = [position[(r, s)] for r, s in zip(sample["row"], sample["start_s"], strict=True)]
    assert rows == sorted(set(rows)) and len(rows) == n
    predicted = _probabilities(result.model, {k: v[rows] for k, v in test_split.items()})
    predicted = predicted.argmax(-1)
    accuracy = float(np.mean(predicted == test_split["label"][rows]))
    assert report["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)

    # the same evaluation in-process leaves every split on disk
    dataset = PreparedDataset(prepared)
    again = evaluate_run(result.run_dir, dataset=dataset, levels=1, seed=3, max_examples=n)
    assert dataset.loaded_splits == []
    assert again["metrics"] == report["metrics"]
    assert again["robustness"] == report["robustness"]


def test_reservoir_sample_is_uniform_and_reproducible(prepared: Path, test_split) -> None:
    dataset = PreparedDataset(prepared)
    total = len(test_split["label"])
    whole, seen = dataset.sample("test", total + 5)
    assert seen == total
    for key, values in test_split.items():
        np.testing.assert_array_equal(whole[key], values)
    head = dataset.head("test", 5)
    np.testing.assert_array_equal(head["start_s"], test_split["start_s"][:5])

    n, draws = 10, 25
    counts = np.zeros(total)
    for seed in range(draws):
        sample, _ = dataset.sample("test", n, seed)
        keys = list(zip(test_split["row"], test_split["start_s"], strict=True))
        picked = [keys.index(k) for k in zip(sample["row"], sample["start_s"], strict=True)]
        assert picked == sorted(set(picked))
        counts[picked] += 1
    again, _ = dataset.sample("test", n, seed=draws - 1)
    np.testing.assert_array_equal(again["start_s"], sample["start_s"])
    # each example is kept with probability n / total: the first and the last examples alike
    rate = n / total
    third = total // 3
    assert abs(counts[:third].mean() / draws - rate) < 0.05
    assert abs(counts[-third:].mean() / draws - rate) < 0.05
    assert dataset.loaded_splits == []
