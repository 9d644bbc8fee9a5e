"""Serving signatures with in-graph input checks, built around a trained Keras model.

Two signatures, both taking a batch:

* ``serving_default``: raw tensors, one per modality, named after it (waveforms, sensor windows,
  image pixels, note strings), as in :class:`mmkeras.data.dataset.ModalitySpec`.
* ``serving_bytes``: the same, except audio as encoded WAV bytes (input ``<name>_wav``, string
  ``[batch]``, decoded with ``tf.audio.decode_wav``) and images as encoded PNG/JPEG bytes (input
  ``<name>_encoded``, decoded with ``tf.io.decode_image``).

When the model has presence inputs (``<name>_present``, float ``[batch, 1]``), both signatures
take them too. TF Serving requires every signature input, so a client that has no data for a
modality sends ``<name>_present = 0`` and an *empty* tensor of the right rank (``[batch, 0]``,
``[batch, 0, 0]``...; ``""`` for text and bytes); the graph substitutes zeros.

Declared shapes have ``-1`` for every axis: the exact per-example shape is enforced by the graph
itself, so a wrong shape is an ``InvalidArgument`` naming the input, the expected and the received
shape (TF Serving does not check fed shapes against the signature). Float inputs must be finite
and inside an accepted range (audio ``[-1, 1]``; other floats the training range widened by a
margin, see :func:`input_contracts`). A model without presence inputs refuses a request that
breaks a rule; a model with presence inputs treats that example's modality as missing instead.

Example:
    >>> contracts = input_contracts({"audio": {"kind": "audio", "shape": [4],
    ...                                        "dtype": "float32", "options": {}}}, {})
    >>> contracts["audio"].low, contracts["audio"].high
    (-1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mmkeras.serving import RANGE_MARGIN

AUDIO_LIMIT = 1.0


@dataclass
class InputContract:
    """What one modality's serving input must be: shape, dtype and accepted value range.

    ``low``/``high`` are scalars or one value per channel (last axis); ``None`` for no range.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    low: float | list[float] | None = None
    high: float | list[float] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (written to ``assets.extra/mmkeras_inputs.json``)."""
        return {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
                "low": self.low, "high": self.high}

    def describe(self) -> str:
        """The expected shape and dtype as a message fragment, e.g. ``[batch, 8000] float32``."""
        return f"[batch{''.join(f', {d}' for d in self.shape)}] {self.dtype}"


def input_contracts(
    modalities: dict[str, dict[str, Any]],
    examples: dict[str, np.ndarray],
    margin: float = RANGE_MARGIN,
) -> dict[str, InputContract]:
    """Contracts for each modality of a ``dataset.json`` ``modalities`` mapping.

    Accepted float range: audio ``[-1, 1]`` (the waveform contract; int16-scale samples are
    refused). Other float inputs: per channel, ``[lo - margin * span, hi + margin * span]`` where
    ``lo``/``hi`` are the modality's ``"range"`` entry in ``dataset.json`` (training minimum and
    maximum) when present, else the minimum and maximum over ``examples`` (``examples.npz``).
    uint8 and string inputs have no range.
    """
    contracts = {}
    for name, spec in modalities.items():
        low = high = None
        if spec["kind"] == "audio":
            low, high = -AUDIO_LIMIT, AUDIO_LIMIT
        elif spec["dtype"].startswith("float"):
            if spec.get("range"):
                lo = np.asarray(spec["range"]["low"], np.float64)
                hi = np.asarray(spec["range"]["high"], np.float64)
            elif name in examples:
                values = np.asarray(examples[name], np.float64)
                values = values.reshape(-1, values.shape[-1] if values.ndim > 2 else 1)
                lo, hi = values.min(axis=0), values.max(axis=0)
            else:
                lo = hi = None
            if lo is not None:
                span = np.maximum(hi - lo, 1e-3 * np.maximum(np.abs(hi), 1.0))
                low = (lo - margin * span).tolist()
                high = (hi + margin * span).tolist()
        contracts[name] = InputContract(name, spec["kind"], tuple(spec["shape"]), spec["dtype"],
                                        low, high, dict(spec.get("options", {})))
    return contracts


def presence_names(model: keras.Model, modalities: list[str]) -> list[str]:
    """The modalities for which ``model`` takes a ``<name>_present`` input."""
    names = {t.name for t in model.inputs}
    return [m for m in modalities if f"{m}_present" in names]


def _shape_ok(x: tf.Tensor, expected: tuple[int, ...]) -> tf.Tensor:
    rank = len(expected)
    tail = tf.shape(x, out_type=tf.int64)[1:]
    padded = tf.concat([tail, tf.zeros([rank], tf.int64)], 0)[:rank]
    same = tf.reduce_all(tf.equal(padded, tf.constant(expected, tf.int64)))
    return tf.logical_and(tf.equal(tf.size(tail), rank), same)


def _empty_ok(x: tf.Tensor, rank: int) -> tf.Tensor:
    return tf.logical_and(tf.equal(tf.rank(x), rank + 1), tf.equal(tf.size(x), 0))


def _assert(condition: tf.Tensor, message: str, *values: tf.Tensor) -> tf.Operation:
    text = tf.strings.format(message, values) if values else tf.constant(message)
    return tf.debugging.Assert(condition, [text], name="input_check")


def _same_batch(name: str, x: tf.Tensor, batch: tf.Tensor) -> tf.Operation:
    return _assert(tf.equal(tf.shape(x)[0], batch), f"input {name}: batch size {{}} differs "
                   "from the other inputs ({})", tf.shape(x)[0], batch)


def _per_example(ok: tf.Tensor, rank: int) -> tf.Tensor:
    return tf.reduce_all(ok, axis=list(range(1, rank + 1))) if rank else ok


def check_modality(
    c: InputContract, x: tf.Tensor, present: tf.Tensor | None, batch: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Apply ``c`` to input ``x``; return the tensor the model gets and the effective presence.

    Without presence (``present`` is None) a broken rule raises ``InvalidArgument``; with it,
    the offending examples get presence 0 and zeros. ``batch`` is the request's batch size.
    """
    rank = len(c.shape)
    checks = []
    shape_ok = _shape_ok(x, c.shape)
    if present is not None and rank > 0:
        empty = _empty_ok(x, rank)
        checks.append(_assert(
            tf.logical_or(shape_ok, empty),
            f"input {c.name}: expected shape {c.describe()} (or an empty [batch, 0...] tensor "
            f"with {c.name}_present = 0), received shape {{}}", tf.shape(x)))
        with tf.control_dependencies(checks):
            x = tf.cond(empty, lambda: tf.zeros(tf.concat([[batch], c.shape], 0), x.dtype),
                        lambda: tf.identity(x))
        x = tf.ensure_shape(x, [None, *c.shape])
        # an empty tensor is a missing modality, even when its flag says present
        present = present * (1.0 - tf.cast(empty, present.dtype))
    else:
        checks.append(_assert(shape_ok, f"input {c.name}: expected shape {c.describe()}, "
                              "received shape {}", tf.shape(x)))
        with tf.control_dependencies(checks):
            x = tf.ensure_shape(tf.identity(x), [None, *c.shape])
    checks = [_same_batch(c.name, x, batch)]
    if not x.dtype.is_floating:
        with tf.control_dependencies(checks):
            return tf.identity(x), present
    finite = _per_example(tf.math.is_finite(x), rank)
    inside = finite
    if c.low is not None:
        low = tf.constant(c.low, x.dtype)
        high = tf.constant(c.high, x.dtype)
        safe = tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))
        inside = tf.logical_and(finite, _per_example((safe >= low) & (safe <= high), rank))
    if present is None:
        bad = tf.where(tf.logical_not(finite))[:, 0]
        checks.append(_assert(tf.reduce_all(finite), f"input {c.name}: NaN or infinite values "
                              "in examples {}", bad))
        if c.low is not None:
            hint = ("waveform samples must be floats in [-1, 1] (divide int16 PCM by 32768)"
                    if c.kind == "audio" else
                    f"values must lie between {_fmt(c.low)} and {_fmt(c.high)} (per channel: "
                    "training range plus margin)")
            outside = tf.where(tf.logical_not(inside))[:, 0]
            checks.append(_assert(tf.reduce_all(inside), f"input {c.name}: {hint}; out of "
                                  "range in examples {}", outside))
        with tf.control_dependencies(checks):
            return tf.identity(x), None
    mask = tf.reshape(inside, [-1] + [1] * rank)
    with tf.control_dependencies(checks):
        x = tf.where(mask, x, tf.zeros_like(x))
    return x, present * tf.cast(inside, present.dtype)[:, None]


def _fmt(value: float | list[float]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}"


def _decode_wav(c: InputContract, data: tf.Tensor) -> tf.Tensor:
    samples = c.shape[0]
    rate = int(c.options.get("sample_rate", 0))
    name = f"{c.name}_wav"

    def one(contents: tf.Tensor) -> tf.Tensor:
        header = tf.logical_and(tf.equal(tf.strings.substr(contents, 0, 4), "RIFF"),
                                tf.equal(tf.strings.substr(contents, 8, 4), "WAVE"))
        is_wav = _assert(tf.logical_and(tf.strings.length(contents) >= 44, header),
                         f"input {name}: not WAV bytes (no RIFF/WAVE header)")
        with tf.control_dependencies([is_wav]):
            audio, sample_rate = tf.audio.decode_wav(contents, desired_channels=1)
        checks = [_assert(tf.equal(tf.shape(audio)[0], samples),
                          f"input {name}: expected {samples} samples, received {{}}",
                          tf.shape(audio)[0])]
        if rate:
            checks.append(_assert(tf.equal(sample_rate, rate),
                                  f"input {name}: expected {rate} Hz, received {{}} Hz",
                                  sample_rate))
        with tf.control_dependencies(checks):
            return tf.reshape(audio, [samples])

    return tf.map_fn(one, data, fn_output_signature=tf.TensorSpec([samples], tf.float32))


def _decode_image(c: InputContract, data: tf.Tensor) -> tf.Tensor:
    from mmkeras.data.image import decode_image

    name = f"{c.name}_encoded"
    height, width, channels = c.shape

    def one(contents: tf.Tensor) -> tf.Tensor:
        known = tf.logical_or(tf.io.is_jpeg(contents), tf.equal(
            tf.strings.substr(contents, 0, 4), b"\x89PNG"))
        is_image = _assert(known, f"input {name}: not PNG or JPEG bytes")
        with tf.control_dependencies([is_image]):
            image = decode_image(contents, channels)
        check = _assert(tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width])),
                        f"input {name}: expected a {height}x{width} image, received {{}}",
                        tf.shape(image)[:2])
        with tf.control_dependencies([check]):
            return tf.reshape(image, c.shape)

    images = tf.map_fn(one, data, fn_output_signature=tf.TensorSpec(c.shape, tf.uint8))
    return images if c.dtype == "uint8" else tf.cast(images, c.dtype)


def bytes_input_name(c: InputContract) -> str | None:
    """Name of the encoded-bytes input replacing ``c`` in ``serving_bytes`` (None: same input)."""
    return {"audio": f"{c.name}_wav", "image": f"{c.name}_encoded"}.get(c.kind)


def _loose(shape_rank: int, dtype: str, name: str) -> tf.TensorSpec:
    return tf.TensorSpec([None] * (shape_rank + 1), tf.as_dtype(dtype), name=name)


def signature_specs(
    contracts: dict[str, InputContract], presence: list[str], encoded: bool
) -> dict[str, tf.TensorSpec]:
    """Input specs of ``serving_default`` (``encoded`` False) or ``serving_bytes`` (True)."""
    specs = {}
    for name, c in contracts.items():
        alt = bytes_input_name(c) if encoded else None
        specs[alt or name] = (tf.TensorSpec([None], tf.string, name=alt) if alt
                              else _loose(len(c.shape), c.dtype, name))
        if name in presence:
            specs[f"{name}_present"] = tf.TensorSpec([None, 1], tf.float32, f"{name}_present")
    return specs


def _batch_size(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    sizes = [tf.shape(v)[0] for k, v in sorted(inputs.items())]
    return tf.reduce_max(tf.stack(sizes))


def _checked_flags(name: str, present: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """``<name>_present`` as sent: one flag per example, each 0 or 1, else ``InvalidArgument``
    (a flag of 0.5, 7 or NaN has no meaning; the model must not guess one)."""
    valid = tf.reduce_all(tf.logical_or(tf.equal(present, 0.0), tf.equal(present, 1.0)), axis=1)
    checks = [
        _same_batch(f"{name}_present", present, batch),
        _assert(tf.reduce_all(valid), f"input {name}_present: flags must be 0 (absent) or 1 "
                "(present); other values in examples {}", tf.where(tf.logical_not(valid))[:, 0]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(present)


def make_serving_fn(
    model: keras.Model,
    contracts: dict[str, InputContract],
    class_names: list[str],
    encoded: bool,
) -> Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """The function behind one signature: decode, check, call ``model``, name the outputs."""
    presence = presence_names(model, list(contracts))
    every_flagged = len(presence) == len(contracts)  # else one modality is always present
    names = tf.constant(list(class_names))
    stand_ins = {n: _silent_stand_in(c) for n, c in contracts.items()
                 if encoded and bytes_input_name(c) and n in presence}

    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = _batch_size(inputs)
        feed = {}
        for name, c in contracts.items():
            present = inputs.get(f"{name}_present")
            if present is not None:
                present = _checked_flags(name, present, batch)
            alt = bytes_input_name(c) if encoded else None
            x = inputs[alt] if alt else inputs[name]
            if alt:
                decode = _decode_wav if c.kind == "audio" else _decode_image
                if present is not None:  # absent examples carry "" bytes: decode a silent stand-in
                    given = tf.strings.length(x) > 0
                    present = present * tf.cast(given, present.dtype)[:, None]
                    x = tf.where(given, x, stand_ins[name])
                with tf.name_scope(f"decode_{alt}"):  # node names say which input failed
                    x = decode(c, x)
            x, present = check_modality(c, x, present, batch)
            feed[name] = x
            if present is not None:
                feed[f"{name}_present"] = present
        if every_flagged:
            feed = _some_modality_present(feed, list(contracts))
        out = model(feed, training=False)
        if isinstance(out, dict):
            result = {k: v for k, v in out.items() if k != "probabilities"}
            probabilities = out["probabilities"]
        else:
            result, probabilities = {}, out
        class_id = tf.argmax(probabilities, axis=-1)
        result.update(probabilities=probabilities, class_id=class_id,
                      class_name=tf.gather(names, class_id))
        return result

    return serve


def _some_modality_present(feed: dict[str, tf.Tensor], names: list[str]) -> dict[str, tf.Tensor]:
    """``feed`` once each example has a present modality, else ``InvalidArgument``: with every
    modality absent, the model has no evidence and its answer would be a made-up class."""
    flags = tf.concat([feed[f"{n}_present"] for n in names], axis=1)
    none = tf.where(tf.reduce_all(tf.equal(flags, 0.0), axis=1))[:, 0]
    check = _assert(tf.equal(tf.size(none), 0), "no modality is present in examples {}: each "
                    f"example needs at least one of {', '.join(names)} (a modality counts as "
                    "absent when its _present flag is 0, its tensor is empty, or its values are "
                    "NaN, infinite or out of range)", none)
    with tf.control_dependencies([check]):
        return {k: tf.identity(v) for k, v in feed.items()}


def _silent_stand_in(c: InputContract) -> bytes:
    if c.kind == "audio":
        return encode_wav(np.zeros(c.shape[0], np.float32), int(c.options.get("sample_rate", 8000)))
    return tf.io.encode_png(np.zeros(c.shape, np.uint8)).numpy()


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of a float waveform in [-1, 1] (what clients send to ``_wav``).

    Example:
        >>> len(encode_wav(np.zeros(100, np.float32), 8000))
        244
    """
    wav = tf.audio.encode_wav(np.asarray(samples, np.float32).reshape(-1, 1), sample_rate)
    return wav.numpy()
