"""HubEncoder wraps a SavedModel built here: frozen vs fine-tuned training, model.keras round
trip, export through keras.export.ExportArchive and reload with TensorFlow alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.encoders.hub import HubEncoder


def write_savedmodel(path: Path, input_shape: tuple = (None, 6), features: int = 5,
                     signature_outputs: bool = False) -> Path:
    """A tiny pretrained-style SavedModel: ``tanh(x @ w + b)`` over the last axis.

    ``signature_outputs``: also a ``serving_default`` signature returning a dict of two outputs.
    """
    rng = np.random.default_rng(1)
    module = tf.Module()
    module.w = tf.Variable(rng.normal(size=(input_shape[-1], features)).astype("float32"))
    module.b = tf.Variable(rng.normal(size=(features,)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32)])
    def embed(x):
        return tf.tanh(tf.einsum("...c,cf->...f", x, module.w) + module.b)

    module.__call__ = embed
    signatures = None
    if signature_outputs:
        signatures = {"serving_default": tf.function(
            lambda x: {"embedding": embed(x), "norm": tf.norm(embed(x), axis=-1)},
            input_signature=[tf.TensorSpec(input_shape, tf.float32)])}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


@pytest.fixture(scope="module")
def vector_model(tmp_path_factory) -> Path:
    return write_savedmodel(tmp_path_factory.mktemp("hub") / "vector")


def wrapped_values(encoder: HubEncoder) -> list[np.ndarray]:
    return [np.array(v) for v in encoder.weights if "dense" not in v.path]


def tiny_model(path: Path, **kwargs) -> tuple[keras.Model, HubEncoder]:
    keras.utils.set_random_seed(0)
    encoder = HubEncoder(str(path), embed_dim=4, name="hub_encoder", **kwargs)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(1)(encoder(inputs)["pooled"])
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model, encoder


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    return x, x[:, :1] * 2.0


def test_frozen_trains_only_the_projection(vector_model):
    model, encoder = tiny_model(vector_model)
    assert len(encoder.non_trainable_weights) == 2 and len(encoder.trainable_weights) == 2
    wrapped = wrapped_values(encoder)
    projection = [np.array(v) for v in encoder.trainable_weights]
    model.fit(*data(), epochs=3, batch_size=16, verbose=0)
    for before, after in zip(wrapped, wrapped_values(encoder), strict=True):
        np.testing.assert_array_equal(before, after)
    assert all(not np.array_equal(b, np.array(a))
               for b, a in zip(projection, encoder.trainable_weights, strict=True))


def test_fine_tuned_variables_change_and_reach_the_wrapped_function(vector_model, tmp_path):
    model, encoder = tiny_model(vector_model, fine_tune=True)
    assert len(encoder.trainable_weights) == 4
    before = wrapped_values(encoder)
    x, y = data()
    loss_before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    after = wrapped_values(encoder)
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert model.evaluate(x, y, verbose=0) < loss_before
    # the wrapped SavedModel function itself computes with the trained values
    w, b = after
    np.testing.assert_allclose(encoder.loaded(x).numpy(), np.tanh(x @ w + b), atol=1e-5)

    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    restored_encoder = restored.get_layer("hub_encoder")
    assert restored_encoder.get_config() == encoder.get_config()
    for got, want in zip(wrapped_values(restored_encoder), after, strict=True):
        np.testing.assert_array_equal(got, want)


def test_export_archive_reloads_with_tensorflow_only(vector_model, tmp_path):
    model, _ = tiny_model(vector_model, fine_tune=True)
    x, y = data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    expected = model.predict(x, verbose=0)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda inputs: model(inputs, training=False),
                         input_signature=[tf.TensorSpec((None, 6), tf.float32)])
    archive.write_out(str(tmp_path / "export"), verbose=False)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        loaded = tf.saved_model.load({str(tmp_path / "export")!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        out = loaded.signatures["serving_default"](x)
        np.save({str(tmp_path / "got.npy")!r}, next(iter(out.values())).numpy())
        heavy = [m for m in ("mmkeras", "tensorflow_hub") if m in sys.modules]
        print(json.dumps(heavy))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), expected, rtol=1e-5, atol=1e-6)


def test_sequence_output_gives_one_token_per_step(tmp_path):
    path = write_savedmodel(tmp_path / "seq", input_shape=(None, 7, 3), features=5)
    out = HubEncoder(str(path), embed_dim=4)(np.ones((2, 7, 3), "float32"))
    assert tuple(out["tokens"].shape) == (2, 7, 4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out["mask"]), np.ones((2, 7)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["pooled"]),
                               keras.ops.convert_to_numpy(out["tokens"]).mean(axis=1), atol=1e-6)


def test_signature_and_output_key(tmp_path):
    path = write_savedmodel(tmp_path / "sig", signature_outputs=True)
    with pytest.raises(ValueError, match="output_key"):
        HubEncoder(str(path), signature="serving_default")
    with pytest.raises(ValueError, match="signature 'embed' not in"):
        HubEncoder(str(path), signature="embed")
    encoder = HubEncoder(str(path), embed_dim=3, signature="serving_default",
                         output_key="embedding")
    assert tuple(encoder(np.ones((2, 6), "float32"))["tokens"].shape) == (2, 1, 3)
    with pytest.raises(ValueError, match=r"returns shape \(None,\); expected a vector"):
        HubEncoder(str(path), signature="serving_default", output_key="norm")
    with pytest.raises(ValueError, match="output_key 'nrom' not among"):
        HubEncoder(str(path), signature="serving_default", output_key="nrom")


def test_input_not_matching_the_saved_function_is_a_clear_error(vector_model):
    with pytest.raises(ValueError, match=r"takes \(None, 6\) float32; got input of shape"):
        HubEncoder(str(vector_model), embed_dim=4)(np.ones((2, 5), "float32"))


def test_local_savedmodel_needs_neither_tensorflow_hub_nor_tf_keras(vector_model):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from mmkeras.encoders.hub import HubEncoder
        HubEncoder({str(vector_model)!r}, embed_dim=4)(np.ones((2, 6), "float32"))
        print([m for m in ("tensorflow_hub", "tf_keras") if m in sys.modules])
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300, check=False, cwd=Path(__file__).parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
