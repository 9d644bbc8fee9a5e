"""`python -m mmkeras.train` end to end, then the SavedModel in a TensorFlow-only process."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mmkeras.layers import load_model
from tests.conftest import TINY_MACHINE

SERVE_SCRIPT = """
import sys, json
sys.modules["mmkeras"] = None  # serving must not need mmkeras: importing it now fails
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
fn = model.signatures["serving_default"]
data = np.load(sys.argv[2])
out = fn(**{k: tf.constant(data[k]) for k in data.files})
np.save(sys.argv[3], out["probabilities"].numpy())
names = [n.decode() for n in out["class_name"].numpy()]
print(json.dumps({"names": names}))
"""
# TensorFlow's C++ start-up chatter, which the CLI keeps off the console unless verbose=2
CHATTER = re.compile(r"oneDNN|cuda|absl::InitializeLog|cpu_feature_guard|^[IWEF]\d{4} ",
                     re.IGNORECASE | re.MULTILINE)


def _run(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "mmkeras.train", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900, check=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("run") / "tiny"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["MMKERAS_CACHE"] = str(cache_dir)
    args = [f"dataset_args.{k}={v}" for k, v in TINY_MACHINE.items()]
    proc = _run([*args, "epochs=2", "verbose=1", "model_name=tiny", "--output", str(out)],
                env, out.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert str(out) in proc.stdout and "test accuracy" in proc.stdout
    assert not CHATTER.search(proc.stdout + proc.stderr), proc.stderr[-4000:]
    return out


def test_run_folder_contents(run_dir):
    for name in ("config.yaml", "metrics.json", "history.csv", "model.keras", "history.png",
                 "confusion_matrix.png", "preprocessing.json", "export_validation.json",
                 "evaluation.json", "eval_reliability.png", "run_info.json", "state.json"):
        assert (run_dir / name).is_file(), name
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    modalities = {"vibration", "audio", "environment", "notes"}
    assert set(evaluation["robustness"]["modalities"]) == modalities
    assert (run_dir / "export" / "tiny" / "1" / "saved_model.pb").is_file()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["epochs"] == 2 and cfg["fusion"] == "sum"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"normal", "bearing_wear", "imbalance", "overheating"}
    cm = np.asarray(metrics["confusion_matrix"])
    assert cm.shape == (4, 4) and cm.sum() == metrics["num_examples"]
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3
    assert not (run_dir / "backup").exists(), "backup should be removed after a finished run"


def test_saved_model_matches_keras_in_a_separate_process(run_dir, tiny_machine, tmp_path):
    test = tiny_machine.splits["test"]
    names = list(tiny_machine.modalities)
    inputs = {k: (test[k].astype(str) if test[k].dtype == object else test[k]) for k in names}
    model = load_model(run_dir / "model.keras")
    expected = np.asarray(model({k: test[k] for k in names})["probabilities"])
    # the signature takes every input; a presence flag of 1 marks the modality present
    flags = {f"{k}_present": np.ones((len(test["label"]), 1), "float32") for k in names}
    np.savez(tmp_path / "inputs.npz", **inputs, **flags)
    (tmp_path / "serve.py").write_text(SERVE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "serve.py"), str(run_dir / "export" / "tiny" / "1"),
         str(tmp_path / "inputs.npz"), str(tmp_path / "probs.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    served = np.load(tmp_path / "probs.npy")
    assert served.shape == expected.shape == (len(test["label"]), 4)
    assert np.max(np.abs(served - expected)) < 1e-5
    assert report["names"] == [tiny_machine.class_names[i] for i in expected.argmax(-1)]


def test_help_and_bad_override(tmp_path):
    proc = _run(["--help"], os.environ, tmp_path)
    assert proc.returncode == 0 and "fusion=sum" in proc.stdout
    proc = _run(["fusion=middle"], os.environ, tmp_path)
    assert proc.returncode == 2 and "fusion" in proc.stderr and "concat" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_print_config_is_quiet_yaml(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = _run(["--print-config", "--strict", "epochs=3"], env, tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["epochs"] == 3 and cfg["strict"] is True and cfg["learning_rate"] == 0.002
    assert not CHATTER.search(proc.stdout)


def test_a_configs_encoders_for_modalities_left_out_are_dropped(tiny_machine, tmp_path):
    """``modalities=[x]`` with a config naming encoders of other modalities (as avdigits.yaml
    does for audio) trains x alone instead of failing on an unknown modality."""
    import tensorflow as tf

    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import _fit

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"encoders": {
        "audio": {"name": "spectrogram_cnn", "utterance_norm": "mean"},
        "environment": {"name": "gru"}}}))
    cfg = resolve_config(config, ["modalities=[environment]", "epochs=1", "embed_dim=8"])
    data = tiny_machine.select(cfg.modalities)
    model, history = _fit(cfg, data, tf.distribute.get_strategy(), tmp_path, chief=True)
    assert len(history["loss"]) == 1
    assert [k for k in model.input if not k.endswith("_present")] == ["environment"]


@pytest.mark.parametrize(("override", "expected"), [
    ("modalities=[audoi]", "config field 'modalities'=['audoi']: dataset 'machine' has no "
                           "modality 'audoi'; did you mean 'audio'?"),
    ("dataset_args.val_fold=99", "config field 'dataset_args'="),
    ("encoders.nomod=conv1d", "this config cannot build its model: encoders given for unknown "
                              "modalities ['nomod']"),
    ("fusion={name: tensor, dim: 0}", "this config cannot build its model: TensorFusion: dim "
                                      "must be >= 1, got 0"),
    ("tasks.lable.type=classification", "this config cannot build its model: split 'train' has "
                                        "no target arrays ['lable']"),
])
def test_a_value_the_dataset_refuses_is_one_line_and_leaves_the_folder_usable(
        cache_dir, tmp_path, capsys, override, expected):
    """Modality names and dataset_args ranges are only known to the dataset, encoder and fusion
    arguments and task names to the builders: a bad one is a config error (exit 2, one line),
    and the fresh --output folder is left empty, so the corrected command runs there without
    --overwrite."""
    from mmkeras.train import main

    out = tmp_path / "run"
    args = [f"dataset_args.{k}={v}" for k, v in TINY_MACHINE.items()]
    code = main([*args, override, "epochs=1", "verbose=0", "--output", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert out.is_dir() and not any(out.iterdir())
