"""`mmkeras.evaluate` on a tiny trained run: metrics against scikit-learn and hand computations,
presence-based contribution, seeded robustness curves, figures and the command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mmkeras.evaluate import main
from mmkeras.evaluation import evaluate_run
from mmkeras.evaluation.metrics import expected_calibration_error, roc_auc_ovr
from mmkeras.evaluation.predict import predict
from mmkeras.evaluation.robustness import (
    corrupt,
    effective_robustness,
    gaussian_noise,
    occlusion,
    relative_robustness,
    severities,
    token_dropout,
)
from mmkeras.evaluation.run_folder import EvaluationError
from mmkeras.layers import load_model
from tests.conftest import TINY_MACHINE

LEVELS = 5
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """A one-epoch gated-fusion run on the tiny machine dataset: (folder, model, dataset)."""
    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import train

    out = tmp_path_factory.mktemp("evaluate") / "gated"
    args = json.dumps({**TINY_MACHINE, "progress": False})
    train(resolve_config(None, ["epochs=1", "verbose=0", "fusion=gated", f"output={out}",
                                f"dataset_args={args}"]))
    from data_pipelines.machine import load

    dataset = load(cache_dir=cache_dir, **TINY_MACHINE)
    return out, load_model(out / "model.keras"), dataset


@pytest.fixture(scope="module")
def report(run):
    """The default evaluation, read from the folder as the command line leaves it."""
    run_dir, _, _ = run
    returned = evaluate_run(run_dir, levels=LEVELS, seed=0)
    written = json.loads((run_dir / "evaluation.json").read_text())
    assert written == json.loads(json.dumps(returned))
    return written


@pytest.fixture(scope="module")
def test_split(run):
    _, model, dataset = run
    test = dataset.splits["test"]
    inputs = {name: test[name] for name in dataset.modalities}
    return inputs, test["label"], predict(model, inputs)


def test_metrics_equal_sklearn(report, test_split):
    _, y, outputs = test_split
    probabilities = outputs["probabilities"]
    y_pred = probabilities.argmax(-1)
    m = report["metrics"]
    assert m["num_examples"] == report["num_examples"] == len(y)
    assert report["subset"] == {"examples": len(y), "of": len(y),
                                "how": "all examples of the split"}
    assert m["accuracy"] == pytest.approx(accuracy_score(y, y_pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, y_pred, average="macro", labels=range(4), zero_division=0), abs=1e-12)
    p, r, f, s = precision_recall_fscore_support(y, y_pred, labels=range(4), zero_division=0)
    for k, name in enumerate(m["class_names"]):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[k], r[k], f[k], s[k]), abs=1e-12)
    assert set(y) == {0, 1, 2, 3} and m["roc_auc"]["absent_classes"] == []
    assert m["roc_auc"]["macro"] == pytest.approx(
        roc_auc_score(y, probabilities, multi_class="ovr", average="macro"), abs=1e-9)
    assert m["calibration"]["ece"] == pytest.approx(
        expected_calibration_error(y, probabilities)["ece"], abs=1e-12)
    assert len(m["calibration"]["bins"]) == 15
    assert sum(b["count"] for b in m["calibration"]["bins"]) == len(y)
    assert np.sum(m["confusion_matrix"]) == len(y)


def test_roc_auc_with_an_absent_class():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=60)  # class 3 never occurs
    p = rng.dirichlet(np.ones(4), size=60)
    result = roc_auc_ovr(y, p, ["a", "b", "c", "d"])
    assert result["absent_classes"] == ["d"] and result["per_class"]["d"] is None
    expected = [roc_auc_score(y == k, p[:, k]) for k in range(3)]
    assert result["macro"] == pytest.approx(np.mean(expected), abs=1e-12)
    full = rng.integers(0, 4, size=60)
    assert roc_auc_ovr(full, p, list("abcd"))["macro"] == pytest.approx(
        roc_auc_score(full, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert roc_auc_ovr(np.zeros(5, int), p[:5], list("abcd"))["macro"] is None


def test_ece_equals_hand_computation():
    # confidences 0.95, 0.85, 0.6 (on the edge: bin (0.4, 0.6]), 0.55, 0.3 with 5 bins
    p = np.array([[0.95, 0.05], [0.15, 0.85], [0.6, 0.4], [0.45, 0.55], [0.3, 0.7]])
    y = np.array([0, 0, 0, 1, 0])
    # bin (0.8, 1]: 0.95 right, 0.85 wrong -> |0.5 - 0.9| * 2/5
    # bin (0.4, 0.6]: 0.6 right, 0.55 right -> |1 - 0.575| * 2/5
    # bin (0.6, 0.8]: 0.7 wrong -> |0 - 0.7| * 1/5
    hand = 0.4 * 2 / 5 + 0.425 * 2 / 5 + 0.7 / 5
    result = expected_calibration_error(y, p, bins=5)
    assert result["ece"] == pytest.approx(hand, abs=1e-12)
    assert [b["count"] for b in result["bins"]] == [0, 0, 2, 1, 2]
    assert result["bins"][2]["confidence"] == pytest.approx(0.575)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 1]), perfect)["ece"] == 0.0


def test_contribution_through_presence_inputs(run, report, test_split):
    _, model, dataset = run
    inputs, y, outputs = test_split
    c = report["contribution"]
    modalities = list(dataset.modalities)
    assert list(c["absent"]) == modalities
    assert c["all_present_accuracy"] == report["metrics"]["accuracy"]
    clean = outputs["probabilities"]
    for k, name in enumerate(modalities):
        absent = predict(model, inputs, absent=(name,))
        acc = float(np.mean(absent["probabilities"].argmax(-1) == y))
        assert c["absent"][name]["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert c["absent"][name]["drop"] == pytest.approx(c["all_present_accuracy"] - acc)
        # the gated fusion leaves an absent modality out of its softmax: weight exactly 0 ...
        assert np.all(absent["modality_weights"][:, k] == 0)
        # ... so its probabilities move, and its raw input no longer matters at all
        assert np.abs(absent["probabilities"] - clean).max() > 1e-6
        scrambled = {**inputs, name: inputs[name][::-1]}
        np.testing.assert_array_equal(
            predict(model, scrambled, absent=(name,))["probabilities"], absent["probabilities"])
    weights = outputs["modality_weights"]
    for k, cls in enumerate(report["metrics"]["class_names"]):
        expected = weights[y == k].mean(axis=0)
        got = [c["weights_per_class"][cls][m] for m in modalities]
        np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.sum(list(c["mean_weights"].values())), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no presence input"):
        predict(model, inputs, absent=("video",))


def test_robustness_curves(report):
    curves = report["robustness"]["modalities"]
    assert report["robustness"]["baseline"] == "chance"
    assert list(curves) == ["vibration", "audio", "environment", "notes"]
    for curve in curves.values():
        assert len(curve["accuracy"]) == LEVELS + 1 == len(curve["severities"]) + 1
        assert curve["accuracy"][0] == report["metrics"]["accuracy"]
        assert 0.0 <= curve["relative_robustness"] <= 1.0
        assert curve["relative_robustness"] == pytest.approx(
            np.trapezoid(curve["accuracy"], np.linspace(0, 1, LEVELS + 1)), abs=1e-12)
        f = np.array(curve["accuracy"])
        assert curve["effective_robustness"] == pytest.approx(np.sum(f - f[0]), abs=1e-9)
    assert curves["audio"]["severities"] == [20.0, 13.75, 7.5, 1.25, -5.0]
    assert curves["notes"]["corruption"] == "token_dropout"


def test_summaries_follow_multibench():
    # MultiBench's relative_robustness_helper: trapezoids 0.1 wide over 11 levels
    f = np.linspace(0.9, 0.3, 11) ** 2
    multibench = sum((f[i] + f[i + 1]) * 0.1 / 2 for i in range(10))
    assert relative_robustness(f.tolist()) == pytest.approx(multibench, abs=1e-12)
    # effective_robustness_helper: sum(f - (lf + f[0] - lf[0]))
    lf = np.linspace(0.8, 0.1, 11)
    assert effective_robustness(f.tolist(), lf.tolist()) == pytest.approx(
        np.sum(f - (lf + f[0] - lf[0])), abs=1e-9)
    with pytest.raises(ValueError, match="same --levels"):
        effective_robustness([1.0, 0.5], [1.0, 0.5, 0.2])


def test_corruptions_are_seeded_and_sized():
    rng = np.random.default_rng
    x = rng(0).normal(3.0, 2.0, size=(40, 2000, 3)).astype(np.float32)
    noisy = gaussian_noise(x, 10.0, rng(1))
    assert noisy.dtype == np.float32
    ratio = (noisy - x).var(axis=1) / x.var(axis=1)  # noise power / signal power = 10^(-SNR/10)
    np.testing.assert_allclose(ratio, 0.1, rtol=0.1)
    np.testing.assert_array_equal(noisy, gaussian_noise(x, 10.0, rng(1)))
    assert not np.array_equal(noisy, gaussian_noise(x, 10.0, rng(2)))

    images = rng(0).integers(0, 256, size=(5, 28, 28, 1), dtype=np.uint8)
    for fraction in severities("image", 4):
        occluded = occlusion(images, fraction, rng(3))
        side = round(fraction * 28)
        means = np.round(images.reshape(5, -1).mean(axis=1))
        for i in range(5):
            changed = occluded[i, ..., 0] == means[i]
            assert changed.sum() >= side * side  # the patch, plus pixels already at the mean
            rows, cols = np.nonzero(occluded[i, ..., 0] != images[i, ..., 0])
            assert rows.max() - rows.min() < side and cols.max() - cols.min() < side
        np.testing.assert_array_equal(occluded, occlusion(images, fraction, rng(3)))

    texts = np.array(["one two three four five six seven eight nine ten"] * 3, dtype=object)
    for fraction, kept in ((0.2, 8), (0.6, 4), (1.0, 0)):
        dropped = token_dropout(texts, fraction, rng(4))
        assert [len(t.split()) for t in dropped] == [kept] * 3
        assert all(set(t.split()) <= set(texts[0].split()) for t in dropped)
    assert list(token_dropout(texts, 0.5, rng(4))) == list(token_dropout(texts, 0.5, rng(4)))


def test_figures_written_atomically(report, run):
    run_dir, _, _ = run
    files = report["files"]
    expected = {"report", "confusion_matrix", "reliability", "modality_weights",
                *(f"robustness_{m}" for m in ("vibration", "audio", "environment", "notes"))}
    assert set(files) == expected
    for key, path in files.items():
        data = Path(path).read_bytes()
        assert len(data) > 1000 and (key == "report" or data.startswith(PNG)), key
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".tmp-")]


def test_seeded_subset_split_and_baseline(run, tmp_path):
    run_dir, model, dataset = run
    kwargs = {"levels": 2, "seed": 1, "split": "val", "max_examples": 12}
    base = tmp_path / "evaluation.json"
    base.write_text(json.dumps({"robustness": {"modalities": {
        "audio": {"accuracy": [0.9, 0.5, 0.2]}, "notes": {"accuracy": [0.9, 0.9, 0.9]}}}}))
    first = evaluate_run(run_dir, model=model, dataset=dataset, baseline=tmp_path, **kwargs)
    second = evaluate_run(run_dir, model=model, dataset=dataset, **kwargs)
    assert first["num_examples"] == 12 and (run_dir / "evaluation_val.json").is_file()
    assert first["subset"] == {"examples": 12, "of": dataset.num_examples("val"), "how":
                               "random subset without replacement (numpy default_rng(1).choice)"}
    assert (run_dir / "eval_val_reliability.png").is_file()
    for name, curve in first["robustness"]["modalities"].items():
        assert curve["accuracy"] == second["robustness"]["modalities"][name]["accuracy"]
    curves = first["robustness"]["modalities"]
    f = np.array(curves["audio"]["accuracy"])
    assert curves["audio"]["effective_robustness"] == pytest.approx(
        np.sum(f - (np.array([0.9, 0.5, 0.2]) + f[0] - 0.9)), abs=1e-9)
    assert curves["vibration"]["effective_robustness"] is None  # no baseline curve for it
    with pytest.raises(EvaluationError, match="same --levels"):
        evaluate_run(run_dir, model=model, dataset=dataset, baseline=base,
                     **{**kwargs, "levels": 1})
    with pytest.raises(EvaluationError, match="unknown split 'dev'"):
        evaluate_run(run_dir, model=model, dataset=dataset, split="dev")


def test_cli(run, capsys, tmp_path):
    run_dir, _, _ = run
    assert main(["--run", str(run_dir), "--levels", "1", "--max-examples", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 examples" in out and "accuracy" in out and str(run_dir / "evaluation.json") in out
    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0 and "--max-examples" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad_levels:
        main(["--run", str(run_dir), "--levels", "0"])
    assert bad_levels.value.code == 2
    capsys.readouterr()
    assert main(["--run", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (f"error: run folder {tmp_path / 'missing'} does not exist "
                                       "(pass the folder written by python -m mmkeras.train "
                                       "--output DIR)\n")
    (tmp_path / "config.yaml").write_text("epochs: 1\n")
    proc = subprocess.run([sys.executable, "-m", "mmkeras.evaluate", "--run", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path} is not a finished run folder: missing dataset.json, model.keras "
        "(pass the folder written by python -m mmkeras.train --output DIR)"], proc.stderr


def test_damaged_run_folder_is_one_line_exit_2(run, tmp_path, capsys):
    """A run killed while saving, or a damaged file: one line naming the file, no traceback."""
    import shutil

    run_dir, _, _ = run
    cases = {
        "model.keras": lambda p: p.write_bytes(p.read_bytes()[:5000]),  # truncated zip
        "config.yaml": lambda p: p.write_text("epochs: [1\n"),
        "dataset.json": lambda p: p.write_text('{"class_names": '),
    }
    for name, damage in cases.items():
        copy = tmp_path / name.replace(".", "_")
        shutil.copytree(run_dir, copy)
        damage(copy / name)
        assert main(["--run", str(copy), "--levels", "1", "--max-examples", "8"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {copy / name} ") and len(err.splitlines()) == 1, err
        assert "--overwrite" in err


def test_corrupt_dispatches_by_kind(run):
    _, _, dataset = run
    test = dataset.splits["test"]
    for name, spec in dataset.modalities.items():
        out = corrupt(spec, test[name][:4], severities(spec.kind, 1)[0], np.random.default_rng(0))
        assert out.shape == np.asarray(test[name][:4]).shape
