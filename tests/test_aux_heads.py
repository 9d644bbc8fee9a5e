"""Unimodal (auxiliary) heads of FusionClassifier: ``tasks.label.unimodal_loss_weight``."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mmkeras.config import ConfigError, resolve_config
from mmkeras.models.backbone import FusionBackbone
from mmkeras.models.task import FusionClassifier

MODALITIES = {"acc": {"input_kind": "sequence", "shape": [16, 3]},
              "temp": {"input_kind": "vector", "shape": [5]}}
CLASSES = 3


def _task(weight: float = 0.3, fusion: str = "concat") -> FusionClassifier:
    keras.utils.set_random_seed(0)
    backbone = FusionBackbone(MODALITIES, fusion=fusion, embed_dim=8, num_classes=CLASSES,
                              modality_dropout=0.3, seed=0)
    tasks = {"label": {"loss_weight": 1.0, "unimodal_loss_weight": weight}}
    return FusionClassifier(backbone, CLASSES, tasks=tasks, name="task")


def _batch(n: int = 12, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = {"acc": rng.normal(size=(n, 16, 3)).astype("float32"),
         "temp": rng.normal(size=(n, 5)).astype("float32"),
         "acc_present": np.ones((n, 1), "float32"), "temp_present": np.ones((n, 1), "float32")}
    return x, rng.integers(0, CLASSES, n)


def test_heads_only_in_the_training_model():
    task = _task()
    assert sorted(task.output) == ["probabilities"]
    trainee = task.training_model()
    assert sorted(trainee.output) == ["acc_unimodal", "probabilities", "temp_unimodal"]
    losses, weights = task.losses_and_weights()
    assert weights == {"probabilities": 1.0, "acc_unimodal": 0.3, "temp_unimodal": 0.3}
    assert set(losses) == set(weights)
    plain = _task(0.0)
    assert sorted(plain.training_model().output) == ["probabilities"]
    assert plain.losses_and_weights()[1] == {"probabilities": 1.0}


def test_loss_scores_each_head_against_the_main_label():
    task = _task(0.3)
    trainee = task.training_model()
    losses, weights = task.losses_and_weights()
    trainee.compile(optimizer="adam", loss=losses, loss_weights=weights,
                    metrics={"probabilities": [keras.metrics.SparseCategoricalAccuracy("acc")]})
    x, y = _batch()
    scores = trainee.evaluate(x, {"probabilities": y}, batch_size=len(y), verbose=0,
                              return_dict=True)
    loss = scores["loss"]
    pred = trainee.predict(x, verbose=0)

    def ce(p: np.ndarray) -> float:
        return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))))

    expected = ce(pred["probabilities"]) + 0.3 * (ce(pred["acc_unimodal"])
                                                  + ce(pred["temp_unimodal"]))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert abs(loss - ce(pred["probabilities"])) > 0.1  # the heads do add to the loss
    assert scores["probabilities_acc"] == pytest.approx(
        np.mean(pred["probabilities"].argmax(-1) == y))


def test_training_fits_each_encoder_alone():
    """Labels set by the vector modality only: its unimodal head learns them."""
    task = _task(1.0)
    trainee = task.training_model()
    losses, weights = task.losses_and_weights()
    trainee.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses, loss_weights=weights)
    x, _ = _batch(96, seed=1)
    y = np.argmax(x["temp"][:, :CLASSES], axis=1)
    trainee.fit(x, {"probabilities": y}, epochs=40, batch_size=32, verbose=0)
    pred = trainee.predict(x, verbose=0)
    assert np.mean(pred["temp_unimodal"].argmax(-1) == y) > 0.9
    # the inference model shares the trained weights
    np.testing.assert_allclose(task.predict(x, verbose=0)["probabilities"],
                               pred["probabilities"], atol=1e-5)


def test_saved_model_round_trip(tmp_path):
    task = _task(0.3)
    x, _ = _batch()
    path = tmp_path / "task.keras"
    task.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.unimodal_loss_weight == 0.3
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["probabilities"],
                               task.predict(x, verbose=0)["probabilities"], atol=1e-6)
    assert sorted(loaded.training_model().output) == sorted(task.training_model().output)


def test_rejected_where_it_does_not_apply():
    with pytest.raises(ValueError, match=r"need an intermediate fusion.*unimodal_loss_weight=0"):
        _task(0.3, fusion="late_mean")
    backbone = FusionBackbone(MODALITIES, embed_dim=8)
    with pytest.raises(ValueError, match="only the main task"):
        FusionClassifier(backbone, CLASSES,
                         tasks={"speed": {"type": "regression", "unimodal_loss_weight": 0.3}})
    with pytest.raises(ConfigError, match="only the main task"):
        resolve_config(None, ["tasks={speed: {type: regression, unimodal_loss_weight: 0.3}}"])
    cfg = resolve_config(None, ["tasks.label.unimodal_loss_weight=0.3"])
    assert cfg.to_dict()["tasks"]["label"]["unimodal_loss_weight"] == 0.3
    assert "unimodal_loss_weight" not in resolve_config(
        None, ["tasks.label.loss_weight=1"]).to_dict()["tasks"]["label"]


def test_single_modality_gets_no_extra_head():
    backbone = FusionBackbone({"acc": MODALITIES["acc"]}, embed_dim=8)
    task = FusionClassifier(backbone, CLASSES, tasks={"label": {"unimodal_loss_weight": 0.3}})
    assert sorted(task.training_model().output) == ["probabilities"]
    assert task.losses_and_weights()[1] == {"probabilities": 1.0}
