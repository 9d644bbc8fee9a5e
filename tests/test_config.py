"""Configuration: every field typed and checked before any work, one-line errors, exit code 2.

The table runs through the real entry point ``mmkeras.train.main(argv)``: validation errors
happen before any data is read or any model is built, so these runs end in milliseconds.
"""

import os
import subprocess
import sys

import pytest
import yaml

from mmkeras.config import ConfigError, load_yaml, resolve_config
from mmkeras.train import main


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# argv -> substrings the single stderr line must contain
ERRORS = [
    (["epochs=true"], ["'epochs'=True", "valid integer"]),
    (["epochs=abc"], ["'epochs'='abc'", "valid integer"]),
    (["epochs=0"], ["'epochs'=0", "greater than or equal to 1"]),
    (["epochs=2.5"], ["'epochs'=2.5", "integer"]),
    (["strict=maybe"], ["'strict'='maybe'", "valid boolean"]),
    (["strict=1"], ["'strict'=1", "valid boolean"]),
    (["learning_rate=-0.01"], ["'learning_rate'=-0.01", "greater than 0"]),
    (["learning_rate=0"], ["'learning_rate'=0", "greater than 0"]),
    (["learning_rate=abc"], ["'learning_rate'", "expected a number", "'abc'"]),
    (["learning_rate=.nan"], ["'learning_rate'", "finite"]),
    (["learning_rate=true"], ["'learning_rate'", "boolean"]),
    (["weight_decay=-5"], ["'weight_decay'=-5", "greater than or equal to 0"]),
    (["early_stopping=-1"], ["'early_stopping'=-1", "greater than or equal to 0"]),
    (["dropout=abc"], ["'dropout'='abc'", "expected a number"]),
    (["dropout=1"], ["'dropout'=1", "less than 1"]),
    (["modality_dropout=-0.1"], ["'modality_dropout'", "greater than or equal to 0"]),
    (["representation_penalty=-1"], ["'representation_penalty'", "greater than or equal"]),
    (["verbose=3"], ["'verbose'=3", "less than or equal to 2"]),
    (["modalities=[]"], ["'modalities'", "at least one modality"]),
    (["modalities=[audio,audio]"], ["'modalities'", "names a modality twice"]),
    (["model_name=../x"], ["'model_name'='../x'", "names a folder"]),
    (["name=a/b"], ["'name'='a/b'", "names a folder"]),
    (["epoch=3"], ["unknown field 'epoch'", "did you mean 'epochs'"]),
    (["epochs"], ["'epochs' is not key=value"]),
    (["modalities=[audio"], ["override 'modalities=[audio'", "YAML"]),
    (["dataset_args.foo=1"], ["'dataset_args.foo'", "no argument 'foo'", "n_machines"]),
    (["dataset_args.n_machine=8"], ["'dataset_args.n_machine'", "did you mean 'n_machines'"]),
    (["dataset_args.n_machines=abc"], ["'dataset_args.n_machines'='abc'", "integer"]),
    (["dataset_args.strict=true"], ["'dataset_args.strict'", "--strict"]),
    (["dataset=mobifal"], ["'dataset'", "did you mean 'mobifall'"]),
    (["fusion=middle"], ["'fusion'='middle'", "unknown fusion 'middle'", "concat"]),
    (["fusion=gatd"], ["'fusion'='gatd'", "did you mean 'gated'"]),
    (["fusion.name=tensor", "fusion.rank=4"], ["'fusion.rank'", "no argument 'rank'", "dim"]),
    (["lr_schedule=cosin"], ["'lr_schedule'", "did you mean 'cosine'"]),
    (["mixed_precision=float16"], ["'mixed_precision'", "mixed_float16"]),
    (["strategy=mirror"], ["'strategy'", "did you mean 'mirrored'"]),
    (["lr_scale_with_replicas=yes please"], ["'lr_scale_with_replicas'", "boolean"]),
    (["tasks.label.type=regresion"], ["'tasks.label.type'", "did you mean 'regression'"]),
    (["tasks.label.loss_weight=0"], ["'tasks.label.loss_weight'", "greater than 0"]),
    (["tasks.label.weight=1"], ["'tasks.label.weight'", "unknown field", "loss_weight"]),
    (["encoders.audio=no_such_encoder"], ["'encoders.audio'", "unknown encoder"]),
    (["--strict", "epochs=-2"], ["'epochs'=-2"]),  # overrides after an option are read
    (["--config", "missing.yaml"], ["missing.yaml does not exist"]),
    (["--no-such-option"], ["unrecognized arguments: --no-such-option"]),
]


@pytest.mark.parametrize(("argv", "expected"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_bad_config_is_one_line_exit_2(argv, expected, capsys):
    code = None
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in err and out == ""


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nfusion: [late\nbatch_size: 8\n")
    code, _, err = run_cli(["--config", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{path}:3:" in err and "YAML syntax error" in err


def test_unknown_field_in_file_suggests_the_name(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("fusoin: concat\n")
    code, _, err = run_cli(["--config", str(path)], capsys)
    assert code == 2 and "unknown field 'fusoin'" in err and "did you mean 'fusion'" in err


# argv -> expected values of the resolved config (printed by --print-config)
GOOD = [
    (["learning_rate=1e-3"], {"learning_rate": 0.001}),
    (["learning_rate=5"], {"learning_rate": 5.0}),
    (["epochs=2", "--strict"], {"epochs": 2, "strict": True}),
    (["--strict", "epochs=2"], {"epochs": 2, "strict": True}),
    (["epochs=2", "--output", "out dir", "seed=3"], {"epochs": 2, "output": "out dir", "seed": 3}),
    (["modalities=audio"], {"modalities": ["audio"]}),
    (["dataset_args.duration_s=1e1"], {"dataset_args": {"duration_s": 10.0}}),
    (["tasks.label.type=classification"],
     {"tasks": {"label": {"type": "classification", "loss_weight": 1.0}}}),
    (["lr_schedule=cosine", "mixed_precision=mixed_bfloat16", "lr_scale_with_replicas=true"],
     {"lr_schedule": "cosine", "mixed_precision": "mixed_bfloat16",
      "lr_scale_with_replicas": True}),
    (["fusion=late_mean", "weight_decay=0", "early_stopping=0"],
     {"fusion": "late_mean", "weight_decay": 0.0, "early_stopping": 0}),
    (["fusion.name=tensor", "fusion.dim=4"], {"fusion": {"name": "tensor", "dim": 4}}),
]


@pytest.mark.parametrize(("argv", "expected"), GOOD, ids=[" ".join(a) for a, _ in GOOD])
def test_print_config_shows_resolved_values(argv, expected, capsys):
    code, out, err = run_cli(["--print-config", *argv], capsys)
    assert code == 0, err
    printed = yaml.safe_load(out)
    for key, value in expected.items():
        assert printed[key] == value and type(printed[key]) is type(value), key
    assert printed["batch_size"] == 64 and printed["strategy"] == "mirrored"


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("fusion: gated\nepochs: 3\nlearning_rate: 1e-3\n"
                    "dataset_args: {n_machines: 8}\n")
    cfg = resolve_config(path, ["epochs=5", "modalities=[audio]", "dataset_args.duration_s=12.5"])
    assert (cfg.fusion, cfg.epochs, cfg.modalities) == ("gated", 5, ["audio"])
    assert cfg.learning_rate == 0.001 and isinstance(cfg.learning_rate, float)
    assert cfg.dataset_args == {"n_machines": 8, "duration_s": 12.5}
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["dataset_args"] == cfg.dataset_args


def test_registered_fusion_and_encoder_arguments_are_checked():
    from mmkeras.registry import ENCODERS, FUSIONS

    fusion, encoder = FUSIONS.names()[0], ENCODERS.names()[0]
    cfg = resolve_config(None, [f"fusion={fusion}", f"encoders.audio={encoder}"])
    assert cfg.fusion == fusion and cfg.encoders == {"audio": encoder}
    with pytest.raises(ConfigError, match=r"'fusion\.no_such_arg'.*has no argument"):
        resolve_config(None, [f"fusion.name={fusion}", "fusion.no_such_arg=1"])


def test_bad_value_in_a_subprocess_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmkeras.train", "learning_rate=abc"], capture_output=True,
        text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: config field 'learning_rate'='abc': expected a number (e.g. 0.001), got 'abc'"
    ]
    assert proc.stdout == ""


# YAML 1.1 traps: a value nobody meant is an error naming the line, never a silent number
TRAPS = [
    ("epochs: 0777\n", ":1:9:", "ambiguous number '0777'", "octal (511)"),
    ("seed: 1:30\n", ":1:7:", "ambiguous number '1:30'", "base-60"),
    ("epochs: 2\nfusion: gated\nepochs: 3\n", ":3:1:", "duplicate key 'epochs'", "line 1"),
]


@pytest.mark.parametrize(("text", "where", "problem", "detail"), TRAPS,
                         ids=["octal", "base-60", "duplicate-key"])
def test_yaml_traps_in_a_file_are_one_line_errors(tmp_path, capsys, text, where, problem,
                                                  detail):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, out, err = run_cli(["--config", str(path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{path}{where}" in err and problem in err and detail in err


@pytest.mark.parametrize("override", ["epochs=0777", "seed=1:30",
                                      "fusion={name: tensor, name: concat}"])
def test_yaml_traps_in_an_override_are_one_line_errors(capsys, override):
    code, out, err = run_cli([override], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"override {override!r}" in err
    assert "ambiguous number" in err or "duplicate key 'name'" in err


def test_numbers_that_are_not_traps_still_read(capsys):
    cfg = resolve_config(None, ["seed=0", "epochs=10", "learning_rate=.5", "name='0777'"])
    assert (cfg.seed, cfg.epochs, cfg.learning_rate, cfg.name) == (0, 10, 0.5, "0777")


def test_non_utf8_or_folder_config_is_one_line(tmp_path, capsys):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"epochs: 2\nname: caf\xe9\n")
    code, _, err = run_cli(["--config", str(latin1)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{latin1}:2: not UTF-8 text (byte 0xe9)" in err and "Traceback" not in err
    code, _, err = run_cli(["--config", str(tmp_path)], capsys)
    assert code == 2 and f"config file {tmp_path} is a folder, not a YAML file" in err


def test_only_true_and_false_are_booleans(tmp_path, capsys):
    """YAML 1.2 booleans: yes/no/on/off stay text (class names such as Speech Commands'
    'yes', 'no', 'on', 'off'), and a boolean field given one says what to write."""
    assert load_yaml("classes: [yes, no, on, off, y, n]\na: true\nb: FALSE") == {
        "classes": ["yes", "no", "on", "off", "y", "n"], "a": True, "b": False}
    path = tmp_path / "run.yaml"
    path.write_text("lr_scale_with_replicas: yes\n")
    code, out, err = run_cli(["--config", str(path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "'lr_scale_with_replicas'='yes'" in err and "write true or false" in err
    assert resolve_config(None, ["name=no", "lr_scale_with_replicas=true"]).name == "no"
