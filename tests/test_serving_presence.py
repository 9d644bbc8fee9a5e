"""Presence inputs through the export: omitted modalities, bad values as missing, dict outputs.

A small Keras model with ``<modality>_present`` inputs and a dict output (``probabilities`` and
``modality_weights``) is written as a run folder and exported like a trained run.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from mmkeras.serving.export import export_run
from mmkeras.serving.protocol import InputSpec, fill_missing_modalities
from mmkeras.serving.signature import encode_wav

MODALITIES = {
    "audio": {"kind": "audio", "shape": [16], "dtype": "float32",
              "options": {"sample_rate": 8000}},
    "environment": {"kind": "timeseries", "shape": [4, 2], "dtype": "float32", "options": {}},
}


def _model() -> keras.Model:
    audio = keras.Input((16,), name="audio")
    env = keras.Input((4, 2), name="environment")
    a_present = keras.Input((1,), name="audio_present")
    e_present = keras.Input((1,), name="environment_present")
    a = keras.layers.Multiply()([keras.layers.Dense(3, name="a")(audio), a_present])
    e = keras.layers.Multiply()([keras.layers.Dense(3, name="e")(keras.layers.Flatten()(env)),
                                 e_present])
    logits = keras.layers.Add()([a, e])
    weights = keras.layers.Concatenate(name="modality_weights")([a_present, e_present])
    outputs = {"probabilities": keras.layers.Softmax(name="probabilities")(logits),
               "modality_weights": weights}
    return keras.Model({"audio": audio, "environment": env, "audio_present": a_present,
                        "environment_present": e_present}, outputs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("presence-run")
    keras.utils.set_random_seed(0)
    model = _model()
    model.save(run / "model.keras")
    rng = np.random.default_rng(0)
    (run / "config.yaml").write_text(yaml.safe_dump({"model_name": "toy", "model_version": 1}))
    (run / "dataset.json").write_text(json.dumps({"name": "toy", "class_names": ["a", "b", "c"],
                                                  "modalities": MODALITIES}))
    np.savez(run / "examples.npz", audio=rng.uniform(-0.5, 0.5, (12, 16)).astype(np.float32),
             environment=rng.normal(30, 2, (12, 4, 2)).astype(np.float32),
             label=np.zeros(12, np.int64))
    path = export_run(run, log=lambda m: None)
    report = json.loads((run / "export_validation.json").read_text())
    assert report["ok"], report["problems"]
    with np.load(run / "examples.npz") as data:
        examples = {k: data[k] for k in data.files}
    return tf.saved_model.load(str(path)), model, examples


def _keras(model, audio, env, a_present, e_present):
    out = model({"audio": audio, "environment": env, "audio_present": a_present,
                 "environment_present": e_present})
    return keras.ops.convert_to_numpy(out["probabilities"])


def test_signature_has_present_inputs_and_weights_output(exported):
    loaded, _, _ = exported
    fn = loaded.signatures["serving_default"]
    assert set(fn.structured_input_signature[1]) == {
        "audio", "audio_present", "environment", "environment_present"}
    assert {"probabilities", "modality_weights", "class_id", "class_name"} <= set(
        fn.structured_outputs)


def test_omitted_modality_equals_present_zero(exported):
    loaded, model, ex = exported
    fn = loaded.signatures["serving_default"]
    specs = {k: InputSpec(v.dtype.name, v.shape.rank)
             for k, v in fn.structured_input_signature[1].items()}
    filled = fill_missing_modalities({"environment": ex["environment"][:3]}, specs)
    assert filled["audio"].shape == (3, 0) and filled["audio_present"].sum() == 0
    out = fn(**{k: tf.constant(v) for k, v in filled.items()})
    ones, zeros = np.ones((3, 1), np.float32), np.zeros((3, 1), np.float32)
    want = _keras(model, np.zeros((3, 16), np.float32), ex["environment"][:3], zeros, ones)
    assert np.abs(out["probabilities"].numpy() - want).max() < 1e-5
    assert out["modality_weights"].numpy().tolist() == [[0.0, 1.0]] * 3


def test_bad_values_are_treated_as_missing_per_example(exported):
    loaded, model, ex = exported
    fn = loaded.signatures["serving_default"]
    audio = ex["audio"][:3].copy()
    audio[1, 4] = np.nan
    audio[2] *= 32767  # int16 scale: outside [-1, 1]
    ones = np.ones((3, 1), np.float32)
    out = fn(audio=tf.constant(audio), environment=tf.constant(ex["environment"][:3]),
             audio_present=tf.constant(ones), environment_present=tf.constant(ones))
    present = np.array([[1], [0], [0]], np.float32)
    clean = np.where(present > 0, audio, 0).astype(np.float32)
    want = _keras(model, clean, ex["environment"][:3], present, ones)
    assert np.abs(out["probabilities"].numpy() - want).max() < 1e-5
    assert out["modality_weights"].numpy()[:, 0].tolist() == [1.0, 0.0, 0.0]


def test_wrong_shape_is_still_refused_naming_the_input(exported):
    loaded, _, ex = exported
    ones = tf.ones((2, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input audio: expected shape "
                       r"\[batch, 16\]"):
        loaded.signatures["serving_default"](
            audio=tf.zeros((2, 15)), environment=tf.constant(ex["environment"][:2]),
            audio_present=ones, environment_present=ones)


def test_bytes_signature_with_missing_wav(exported):
    loaded, model, ex = exported
    fn = loaded.signatures["serving_bytes"]
    wavs = np.array([encode_wav(ex["audio"][0], 8000), b""], dtype=object)
    out = fn(audio_wav=tf.constant(wavs), environment=tf.constant(ex["environment"][:2]),
             audio_present=tf.ones((2, 1)), environment_present=tf.ones((2, 1)))
    assert out["modality_weights"].numpy()[:, 0].tolist() == [1.0, 0.0]
    decoded = tf.audio.decode_wav(wavs[0], desired_channels=1).audio.numpy()[:, 0]
    audio = np.stack([decoded, np.zeros(16, np.float32)])
    want = _keras(model, audio, ex["environment"][:2], np.array([[1], [0]], np.float32),
                  np.ones((2, 1), np.float32))
    assert np.abs(out["probabilities"].numpy() - want).max() < 1e-5


def test_empty_tensor_is_missing_even_when_flagged_present(exported):
    """``[batch, 0]`` with ``present = 1`` (or no flag) is a missing modality, not zeros."""
    loaded, model, ex = exported
    fn = loaded.signatures["serving_default"]
    specs = {k: InputSpec(v.dtype.name, v.shape.rank)
             for k, v in fn.structured_input_signature[1].items()}
    env, ones = ex["environment"][:2], np.ones((2, 1), np.float32)
    zeros = np.zeros((2, 1), np.float32)
    want = _keras(model, np.zeros((2, 16), np.float32), env, zeros, ones)
    filled = fill_missing_modalities({"audio": np.zeros((2, 0), np.float32),
                                      "environment": env}, specs)
    assert filled["audio_present"].tolist() == [[0.0], [0.0]]
    out = fn(audio=tf.zeros((2, 0)), environment=tf.constant(env),
             audio_present=tf.constant(ones), environment_present=tf.constant(ones))
    assert np.abs(out["probabilities"].numpy() - want).max() < 1e-5
    assert out["modality_weights"].numpy()[:, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("flag", "problem"), [
    ([[1.0], [0.5]], r"audio_present: flags must be 0 \(absent\) or 1 \(present\); other "
                     r"values in examples \[1\]"),
    ([[7.0], [1.0]], r"audio_present: flags must be 0 .* examples \[0\]"),
    ([[np.nan], [-1.0]], r"audio_present: flags must be 0 .* examples \[0 1\]"),
    ([[1.0]], r"audio_present: batch size 1 differs from the other inputs \(2\)"),
], ids=["half", "seven", "nan-and-negative", "batch"])
def test_presence_flags_other_than_0_or_1_are_refused(exported, flag, problem):
    """A flag is 0 or 1, one per example: anything else is InvalidArgument (HTTP 400), never a
    scaled or guessed presence."""
    loaded, _, ex = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=problem):
        loaded.signatures["serving_default"](
            audio=tf.constant(ex["audio"][:2]), environment=tf.constant(ex["environment"][:2]),
            audio_present=tf.constant(flag, tf.float32), environment_present=tf.ones((2, 1)))


@pytest.mark.parametrize("case", ["flags", "nan-and-omitted", "empty-wav-and-flag"])
def test_an_example_with_no_modality_present_is_refused(exported, case):
    """With every modality absent the model has no evidence: InvalidArgument (HTTP 400) naming
    the example, whether absence comes from flags, invalid values, omission or empty bytes."""
    loaded, _, ex = exported
    audio, env = ex["audio"][:3].copy(), ex["environment"][:3]
    ones = np.ones((3, 1), np.float32)
    if case == "flags":
        out = dict(signature="serving_default", audio=audio, environment=env,
                   audio_present=np.array([[1], [0], [0]], np.float32),
                   environment_present=np.array([[1], [0], [1]], np.float32))
    elif case == "nan-and-omitted":
        audio[2, 0] = np.nan
        out = dict(signature="serving_default", audio=audio,
                   environment=np.zeros((3, 0, 0), np.float32), audio_present=ones,
                   environment_present=ones)
    else:
        wavs = [encode_wav(audio[0], 8000), encode_wav(audio[1], 8000), b""]
        out = dict(signature="serving_bytes", audio_wav=np.array(wavs, dtype=object),
                   environment=env, audio_present=ones,
                   environment_present=np.array([[0], [0], [0]], np.float32))
    fn = loaded.signatures[out.pop("signature")]
    want = (r"no modality is present in examples \[%s\]: each example needs at least one of "
            r"audio, environment" % ("1" if case == "flags" else "2"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=want):
        fn(**{k: tf.constant(v) for k, v in out.items()})
