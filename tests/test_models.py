"""The model family end to end: every registered fusion with the real preprocessor and encoders.

Checks, per fusion: one training step, raw-input inference, ``model.keras`` round trip with
identical outputs, and the presence contract at model level (an absent modality's raw input,
however perturbed, changes no output at all).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data.dataset import to_tf_dataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.layers import load_model
from mmkeras.models import FusionBackbone, FusionClassifier, build_models, end_to_end
from mmkeras.registry import FUSIONS
from mmkeras.training.trainer import feature_dataset


@pytest.fixture(scope="module")
def state(tiny_machine):
    return fit_preprocessing(tiny_machine)


@pytest.fixture(scope="module")
def raw_batch(tiny_machine):
    inputs, _ = next(iter(to_tf_dataset(tiny_machine, "test", 16)))
    return {k: v.numpy() for k, v in inputs.items()}


def predict(model: keras.Model, inputs: dict) -> dict:
    """Eager inference: no tracing per input set, numpy arrays (strings too) taken as they are."""
    return keras.tree.map_structure(np.asarray, model(inputs, training=False))


def perturbed(name: str, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if value.dtype.kind in "OSU":  # notes: other words
        return np.array([b"spindle seized alarm " * 3] * len(value), dtype=object)
    return (value + rng.normal(0, 50, value.shape)).astype(value.dtype)


def trained(tiny_machine, state, fusion: str, **kwargs):
    keras.utils.set_random_seed(0)
    pre, task = build_models(tiny_machine.modalities, state, 4, fusion=fusion, embed_dim=8,
                             **kwargs)
    trainee = task.training_model()
    losses, weights = task.losses_and_weights()
    trainee.compile(keras.optimizers.Adam(1e-2), loss=losses, loss_weights=weights)
    batches = feature_dataset(pre, tiny_machine, "train", 32, kwargs.get("tasks"), shuffle=True)
    features, targets = next(iter(batches))
    loss = trainee.train_on_batch(features, targets)
    assert np.all(np.isfinite(loss))
    return pre, task


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_fusion_model_round_trip_and_presence(fusion, tiny_machine, state, raw_batch, tmp_path):
    pre, task = trained(tiny_machine, state, fusion)
    model = end_to_end(pre, task)
    out = predict(model, raw_batch)
    probabilities = out["probabilities"]
    assert probabilities.shape == (16, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    if FUSIONS.get(fusion).returns_weights:
        assert out["modality_weights"].shape == (16, len(tiny_machine.modalities))

    path = tmp_path / "model.keras"
    model.save(path)
    restored = predict(load_model(path), raw_batch)
    for key in out:
        np.testing.assert_array_equal(restored[key], out[key])

    rng = np.random.default_rng(1)
    for name in tiny_machine.modalities:
        absent = {**raw_batch, f"{name}_present": np.zeros((16, 1), "float32")}
        reference = predict(model, absent)
        changed = {**absent, name: perturbed(name, raw_batch[name], rng)}
        again = predict(model, changed)
        for key in reference:
            np.testing.assert_array_equal(again[key], reference[key],
                                          err_msg=f"{fusion}: absent {name} changed {key}")


def test_multitask_heads_and_penalty(tiny_machine, state):
    tasks = {"label": {"loss_weight": 1.0},
             "end_s": {"type": "regression", "loss_weight": 0.5}}
    pre, task = trained(tiny_machine, state, "concat", tasks=tasks, representation_penalty=0.01)
    assert sorted(task.output) == ["end_s", "probabilities"]
    assert task.losses_and_weights()[1] == {"probabilities": 1.0, "end_s": 0.5}
    assert len(task.training_model().losses) == 1  # the representation penalty
    test = tiny_machine.splits["test"]
    out = predict(end_to_end(pre, task), {k: test[k][:4] for k in pre.modalities})
    assert out["end_s"].shape == (4, 1)


def test_unknown_names_suggest_the_closest(tiny_machine, state):
    with pytest.raises(ValueError, match="did you mean 'gated'"):
        build_models(tiny_machine.modalities, state, 4, fusion="gatd")
    with pytest.raises(ValueError, match="did you mean 'conv1d'"):
        build_models(tiny_machine.modalities, state, 4, encoders={"environment": "conv1"})
    with pytest.raises(ValueError, match="unknown modalities"):
        build_models(tiny_machine.modalities, state, 4, encoders={"sound": "conv1d"})


def test_pooled_fusion_trains_every_weight_and_builds_no_token_weights(tiny_machine, state):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, task = trained(tiny_machine, state, "sum")
    gradients = [str(w.message) for w in caught if "Gradients do not exist" in str(w.message)]
    assert gradients == []
    backbone = task.backbone
    kinds = {n: type(backbone.get_layer(f"{n}_encoder")).registered_name
             for n in tiny_machine.modalities}
    assert kinds == {"vibration": "spectrogram_cnn", "audio": "spectrogram_cnn",
                     "environment": "conv1d", "notes": "text_bag"}
    shapes = {n: (None, *m["shape"]) for n, m in backbone.modalities.items()}
    for name in kinds:
        encoder = backbone.get_layer(f"{name}_encoder")
        assert encoder.return_tokens is False
        with_tokens = type(encoder).from_config({**encoder.get_config(), "return_tokens": True})
        with_tokens.build(shapes[name])
        # the token projection Dense(embed_dim) of the last feature map, none for text_bag
        dropped = 0 if name == "notes" else (encoder.filters[-1] + 1) * 8
        assert with_tokens.count_params() - encoder.count_params() == dropped, name
    _, cross = build_models(tiny_machine.modalities, state, 4, fusion="cross_attention",
                            embed_dim=8)
    assert all(cross.backbone.get_layer(f"{n}_encoder").return_tokens for n in kinds)
    for name in kinds:  # the token projections that the pooled fusion left out
        tokenize = getattr(cross.backbone.get_layer(f"{name}_encoder"), "tokenize", None)
        assert (tokenize is not None) == (name != "notes"), name


def gradient_warnings(caught: list) -> list[str]:
    return [str(w.message) for w in caught if "Gradients do not exist" in str(w.message)]


def test_token_fusion_trains_every_weight_and_builds_no_pooled_weights(tiny_machine, state):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre, task = trained(tiny_machine, state, "cross_attention")
    assert gradient_warnings(caught) == []
    backbone = task.backbone
    shapes = {n: (None, *m["shape"]) for n, m in backbone.modalities.items()}
    for name in tiny_machine.modalities:
        encoder = backbone.get_layer(f"{name}_encoder")
        assert (encoder.return_tokens, encoder.return_pooled) == (True, False), name
        with_pooled = type(encoder).from_config({**encoder.get_config(), "return_pooled": True})
        with_pooled.build(shapes[name])
        # the relu projection of the pooled summary, none for text_bag
        dropped = 0 if name == "notes" else with_pooled.project.count_params()
        assert with_pooled.count_params() - encoder.count_params() == dropped, name
    trainee = task.training_model()
    features, targets = next(iter(feature_dataset(pre, tiny_machine, "train", 32, None)))
    with tf.GradientTape() as tape:
        predicted = trainee(features, training=True)["probabilities"]
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            targets["probabilities"], predicted))
    gradients = tape.gradient(loss, trainee.trainable_weights)
    assert [w.path for w, g in zip(trainee.trainable_weights, gradients, strict=True)
            if g is None] == []


def test_token_fusion_keeps_pooled_for_unimodal_heads(tiny_machine, state):
    tasks = {"label": {"loss_weight": 1.0, "unimodal_loss_weight": 0.3}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, task = trained(tiny_machine, state, "cross_attention", tasks=tasks)
    assert gradient_warnings(caught) == []
    backbone = task.backbone
    assert backbone.keep_pooled
    assert all(backbone.get_layer(f"{n}_encoder").return_pooled for n in tiny_machine.modalities)
    assert sorted(task.training_model().output) == sorted(
        ["probabilities", *(f"{n}_unimodal" for n in tiny_machine.modalities)])
    unpooled = FusionBackbone.from_config({**backbone.get_config(), "keep_pooled": False})
    with pytest.raises(ValueError, match="build the backbone with keep_pooled=True"):
        FusionClassifier(unpooled, 4, tasks=tasks)
    # a backbone saved before keep_pooled existed kept (and saved) every encoder's pooled weights
    saved = {k: v for k, v in unpooled.get_config().items() if k != "keep_pooled"}
    assert FusionBackbone.from_config(saved).get_layer("audio_encoder").return_pooled
    # one modality: no unimodal heads, so nothing keeps pooled
    _, single = build_models({"audio": tiny_machine.modalities["audio"]}, state, 4,
                             fusion="cross_attention", embed_dim=8, tasks=tasks)
    assert not single.backbone.get_layer("audio_encoder").return_pooled
