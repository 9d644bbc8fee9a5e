"""Late stacking on frozen unimodal models, end to end on the embedded machine dataset.

Two single-modality runs (``late_mean``) are trained and saved; a ``late_stacking`` run with
``fusion.unimodal`` pointing at them trains only its stacking Dense, then saves, reloads (without
the unimodal files) and exports like any run.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from mmkeras.config import resolve_config
from mmkeras.data.dataset import to_tf_dataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.layers import load_model
from mmkeras.models import FusionClassifier, build_models, end_to_end
from mmkeras.training.trainer import feature_dataset, train

FROZEN = ("vibration", "environment")


def task_of(model: keras.Model) -> FusionClassifier:
    return next(layer for layer in model.layers if isinstance(layer, FusionClassifier))


@pytest.fixture(scope="module")
def state(tiny_machine):
    return fit_preprocessing(tiny_machine)


@pytest.fixture(scope="module")
def unimodal_runs(tiny_machine, state, tmp_path_factory) -> dict[str, Path]:
    """One trained single-modality late_mean model per frozen modality, saved as a run does."""
    root = tmp_path_factory.mktemp("unimodal")
    runs = {}
    for name in FROZEN:
        keras.utils.set_random_seed(0)
        data = tiny_machine.select([name])
        pre, task = build_models(data.modalities, {name: state[name]}, 4, fusion="late_mean",
                                 embed_dim=8)
        trainee = task.training_model()
        trainee.compile(keras.optimizers.Adam(1e-2), loss=task.losses_and_weights()[0])
        trainee.fit(feature_dataset(pre, data, "train", 32, None, shuffle=True), epochs=2,
                    verbose=0)
        runs[name] = root / name
        runs[name].mkdir()
        end_to_end(pre, task).save(runs[name] / "model.keras")
    return runs


def unimodal_parts(path: Path, name: str) -> tuple[list, list]:
    backbone = task_of(load_model(path / "model.keras")).backbone
    return (backbone.get_layer(f"{name}_encoder").get_weights(),
            backbone.get_layer("fusion").heads[0].get_weights())


def test_stacking_on_frozen_unimodal_models_end_to_end(tiny_machine, unimodal_runs, tmp_path):
    unimodal_runs = {n: Path(shutil.copytree(p, tmp_path / n)) for n, p in unimodal_runs.items()}
    overrides = ["fusion=late_stacking", "modalities=[vibration, environment]", "epochs=3",
                 "embed_dim=8", "verbose=0", "early_stopping=0", "modality_dropout=0",
                 "learning_rate=0.05", f"output={tmp_path / 'run'}"]
    overrides += [f"fusion.unimodal.{n}={p}" for n, p in unimodal_runs.items()]
    result = train(resolve_config(None, overrides), dataset=tiny_machine)
    task = task_of(result.model)
    # only the stacking Dense trained
    paths = [w.path for w in task.trainable_weights]
    assert len(paths) == 2 and all("stacking" in p for p in paths), paths
    fusion = task.backbone.get_layer("fusion")
    for m, name in enumerate(FROZEN):
        encoder_weights, head_weights = unimodal_parts(unimodal_runs[name], name)
        for got, want in zip(task.backbone.get_layer(f"{name}_encoder").get_weights(),
                             encoder_weights, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} encoder moved")
        for got, want in zip(fusion.heads[m].get_weights(), head_weights, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} head moved")
    with open(tmp_path / "run" / "history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # saved, reloaded without the unimodal files, still frozen, identical predictions; exported
    for path in unimodal_runs.values():
        shutil.rmtree(path)
    restored = load_model(tmp_path / "run" / "model.keras")
    assert len(task_of(restored).trainable_weights) == 2
    inputs, _ = next(iter(to_tf_dataset(tiny_machine.select(list(FROZEN)), "test", 16)))
    want = result.model(inputs, training=False)["probabilities"]
    got = restored(inputs, training=False)["probabilities"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got),
                                  keras.ops.convert_to_numpy(want))
    assert (result.export_dir / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "run" / "export_validation.json").read_text())["ok"]


def test_unimodal_models_are_checked(tiny_machine, state, unimodal_runs, tmp_path):
    data = tiny_machine.select(list(FROZEN))
    sub = {n: state[n] for n in FROZEN}
    vib = str(unimodal_runs["vibration"])
    with pytest.raises(ValueError, match=r"has modalities \['vibration'\].*'environment' alone"):
        build_models(data.modalities, sub, 4,
                     fusion={"name": "late_stacking", "unimodal": {"environment": vib}})
    with pytest.raises(ValueError, match=r"encoders\.vibration = 'gru' disagrees"):
        build_models(data.modalities, sub, 4, encoders={"vibration": "gru"},
                     fusion={"name": "late_stacking", "unimodal": {"vibration": vib}})
    with pytest.raises(ValueError, match="nothing left to train"):
        build_models(data.modalities, sub, 4, embed_dim=8, fusion={
            "name": "late_mean", "unimodal": {n: str(p) for n, p in unimodal_runs.items()}})
    shifted = {**sub, "vibration": json.loads(json.dumps(sub["vibration"]))}
    shifted["vibration"]["standardizer"]["center"][0] += 1.0
    with pytest.raises(ValueError, match="fitted on other preprocessing statistics"):
        build_models(data.modalities, shifted, 4,
                     fusion={"name": "late_stacking", "unimodal": {"vibration": vib}})
    with pytest.raises(ValueError, match="does not exist; train it with modalities=\\[vibration"):
        build_models(data.modalities, sub, 4, fusion={
            "name": "late_stacking", "unimodal": {"vibration": str(tmp_path / "nothing")}})
