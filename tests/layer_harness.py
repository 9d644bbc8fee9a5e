"""``run_layer_test``: the checks every mmkeras layer passes, in the spirit of Keras's own.

Works for any layer whose call takes nested structures of tensors (dicts, lists, tuples), as
positional arguments plus keyword arguments: encoders ``layer(x, step_mask=m)``, fusions
``layer(features, presence)``. Each leaf array becomes one ``keras.Input``.

Example (in a test)::

    run_layer_test((GatedFusion, {"embed_dim": 8}), [features, presence],
                   expected_shapes={"fused": (None, 8), "modality_weights": (None, 3)})
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np


def run_layer_test(
    make_layer: tuple[type, dict[str, Any]],
    inputs: list,
    expected_shapes: Any = None,
    call_kwargs: dict[str, Any] | None = None,
    all_weights_train: bool = True,
) -> None:
    """Build, train one step, check the config, save/load and run under ``mixed_float16``.

    ``make_layer`` is ``(cls, kwargs)``: pass every constructor argument explicitly, with
    values that differ from the defaults, so a key missing from ``get_config`` is caught.
    ``inputs`` are the positional call arguments (nested structures of numpy arrays, batch
    first); ``call_kwargs`` the keyword ones (arrays become inputs, other values are passed
    as they are). ``expected_shapes`` mirrors the output structure, ``None`` for unknown
    dimensions. ``all_weights_train``: every trainable weight must move in one training step
    (a weight that gets no gradient is usually a bug); ``False`` asks only that some do.
    Raises ``AssertionError`` on the first failed check.
    """
    cls, kwargs = make_layer
    call_kwargs = dict(call_kwargs or {})
    structure = {
        "args": list(inputs),
        "kwargs": {k: v for k, v in call_kwargs.items() if _is_arrays(v)},
    }
    static = {k: v for k, v in call_kwargs.items() if not _is_arrays(v)}
    arrays = [np.asarray(a) for a in keras.tree.flatten(structure)]
    batch = arrays[0].shape[0]
    assert all(a.shape[:1] == (batch,) for a in arrays), "inputs must share the batch size"
    keras.utils.set_random_seed(0)

    # (1) functional build, output shapes
    layer = cls(**kwargs)
    model, symbolic = _functional(layer, structure, static)
    outputs = _predict(model, arrays)
    if expected_shapes is not None:
        got = keras.tree.map_structure(lambda t: tuple(t.shape), symbolic)
        assert _shapes(got) == _shapes(expected_shapes), (
            f"{cls.__name__}: output shapes {got} != expected {expected_shapes}")
    for leaf, value in zip(keras.tree.flatten(symbolic), outputs, strict=True):
        assert len(leaf.shape) == value.ndim and all(
            d is None or d == v for d, v in zip(leaf.shape, value.shape, strict=True)
        ), f"{cls.__name__}: computed shape {value.shape} != symbolic {leaf.shape}"

    graph = model.predict(arrays, batch_size=batch, verbose=0)
    for got, want in zip(keras.tree.flatten(graph), outputs, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{cls.__name__}: predict() differs from an eager call")

    # (2) one training step through a Dense head on the first floating output
    _train_one_step(layer, model, arrays, outputs, all_weights_train)
    outputs = _predict(model, arrays)

    # (3) config: every constructor argument, round trip, and a rebuilt layer computes the same
    config = layer.get_config()
    for key, value in kwargs.items():
        assert key in config, f"{cls.__name__}.get_config() drops constructor argument {key!r}"
        assert _plain(config[key]) == _plain(value), (
            f"{cls.__name__}.get_config()[{key!r}] = {config[key]!r}, constructed with {value!r}")
    assert cls.from_config(config).get_config() == config, (
        f"{cls.__name__}.from_config(config).get_config() differs from config")
    rebuilt = cls.from_config(config)
    rebuilt_model, _ = _functional(rebuilt, structure, static)
    try:
        rebuilt.set_weights(layer.get_weights())
    except ValueError as error:
        raise AssertionError(f"{cls.__name__} rebuilt from get_config() has other weights "
                             f"(a constructor argument is not in the config?): {error}") from error
    for got, want in zip(_predict(rebuilt_model, arrays), outputs, strict=True):
        np.testing.assert_array_equal(
            got, want, err_msg=f"{cls.__name__} rebuilt from get_config() computes other outputs "
                               "(a constructor argument is not in the config?)")

    # (4) .keras round trip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.keras"
        model.save(path)
        restored = keras.saving.load_model(path, custom_objects={cls.__name__: cls})
    for got, want in zip(_predict(restored, arrays), outputs, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=f"{cls.__name__}: .keras round trip")

    # (5) mixed precision forward pass
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed_model, _ = _functional(cls(**kwargs), structure, static)
        for value in _predict(mixed_model, arrays):
            if np.issubdtype(value.dtype, np.floating):
                assert np.all(np.isfinite(value)), f"{cls.__name__}: non-finite under float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _is_arrays(value: Any) -> bool:
    leaves = keras.tree.flatten(value)
    return bool(leaves) and all(isinstance(v, np.ndarray) or keras.ops.is_tensor(v)
                                for v in leaves)


def _functional(layer: keras.layers.Layer, structure: dict, static: dict):
    """A model with one ``keras.Input`` per leaf (flat list in, flat list out)."""
    flat = [np.asarray(a) for a in keras.tree.flatten(structure)]
    inputs = [keras.Input(shape=a.shape[1:], dtype=str(a.dtype)) for a in flat]
    packed = keras.tree.pack_sequence_as(structure, inputs)
    outputs = layer(*packed["args"], **packed["kwargs"], **static)
    return keras.Model(inputs, keras.tree.flatten(outputs)), outputs


def _predict(model: keras.Model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    out = model([keras.ops.convert_to_tensor(a) for a in arrays], training=False)
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(out)]


def _train_one_step(layer, model, arrays, outputs, all_weights_train: bool) -> None:
    name = type(layer).__name__
    floating = [i for i, o in enumerate(outputs) if np.issubdtype(o.dtype, np.floating)]
    assert floating, f"{name}: no floating output to train on"
    # Train on every float output at once, so a layer whose outputs come from different
    # weights (an encoder's tokens and pooled vector) moves all of them.
    heads = [keras.layers.Dense(1)(keras.layers.Flatten()(model.outputs[i])) for i in floating]
    head = heads[0] if len(heads) == 1 else keras.layers.Add()(heads)
    trainer = keras.Model(model.inputs, head)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    rng = np.random.default_rng(0)
    target = rng.normal(size=(len(arrays[0]), 1)).astype("float32")
    before = [np.array(w) for w in layer.trainable_weights]
    history = trainer.fit(arrays, target, batch_size=len(arrays[0]), epochs=1, verbose=0,
                          shuffle=False)
    assert np.isfinite(history.history["loss"][0]), f"{name}: non-finite training loss"
    if not before:
        return
    still = [w.path for w, b in zip(layer.trainable_weights, before, strict=True)
             if np.array_equal(np.array(w), b)]
    if all_weights_train:
        assert not still, f"{name}: one training step left weights untouched: {still}"
    else:
        assert len(still) < len(before), f"{name}: one training step changed no weight"


def _plain(value: Any) -> Any:
    """Tuples as lists, numpy scalars as Python values: how a config looks after JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _shapes(value: Any) -> Any:
    """Nested shapes with tuples of ints for shapes and lists for containers."""
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if all(v is None or isinstance(v, int) for v in value):
            return tuple(value)
        return [_shapes(v) for v in value]
    return value
