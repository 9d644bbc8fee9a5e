"""Training-time augmentation in the ``tf.data`` pipeline: waveforms, log-mel features, images.

Settings are plain data, keyed by modality kind (every modality of that kind gets them), and
are the ``augment`` field of a run configuration:

.. code-block:: yaml

    augment:
      audio: {speed: 0.1, time_shift: 0.1, gain_db: 6, noise_snr_db: [5, 30], noise_prob: 0.5,
              time_masks: 2, time_mask_width: 8, freq_masks: 2, freq_mask_width: 6}
      image: {translation: 0.1, rotation: 15}

Audio, on the raw waveform ``[B, samples]`` in [-1, 1], before the preprocessor:

- ``speed``: resample by a uniform factor in ``[1 - s, 1 + s]`` (linear interpolation; faster
  is shorter and higher, as in speed perturbation, Ko et al. 2015), zero-padded at the end;
- ``time_shift``: shift by a uniform number of samples in ``[-f, f] x samples`` (zeros fill
  what is shifted in, nothing wraps around);
- ``gain_db``: multiply by a uniform gain in ``[-g, g]`` dB, then clip to [-1, 1];
- ``noise_snr_db: [low, high]``, ``noise_prob``: with probability ``noise_prob`` add white
  Gaussian noise at a uniform SNR in ``[low, high]`` dB; the signal power is the mean square
  of the clip's non-zero samples (the zero padding does not count).

Audio, on the standardised log-mel features ``[B, frames, mels]`` after the preprocessor
(SpecAugment, Park et al. 2019): ``time_masks`` masks of a uniform width in
``[0, time_mask_width]`` frames and ``freq_masks`` masks of ``[0, freq_mask_width]`` mel bands,
each set to 0 (the training mean after standardisation).

Image, on the raw image ``[B, H, W, C]`` before the preprocessor: a uniform rotation in
``[-rotation, rotation]`` degrees about the centre and a uniform translation in
``[-translation, translation] x (H, W)``, bilinear, filled with 0, in the input's dtype
(``uint8`` is rounded and clipped).

Only core TensorFlow ops (stateless random ops, ``ImageProjectiveTransformV3``) are used.
:func:`augmented_features` builds the training pipeline: the raw split is cached, then every
epoch shuffled, batched, augmented on the raw inputs, preprocessed and augmented on the
features; random numbers come from ``tf.data.Dataset.random(seed)`` re-drawn each epoch, so a
run is reproducible and every epoch sees new augmentations. Nothing here is part of the model:
validation, test, ``model.keras`` and the exported SavedModel never see it.

Example:
    >>> settings = check_settings({"audio": {"gain_db": 6, "time_masks": 1}})
    >>> settings["audio"]["gain_db"], settings["audio"]["time_mask_width"]
    (6.0, 0)
    >>> waves = tf.ones([2, 100]) * 0.5
    >>> louder = augment_waveforms(waves, tf.constant([1, 2]), settings["audio"])
    >>> louder.shape, louder.dtype
    (TensorShape([2, 100]), tf.float32)
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np
import tensorflow as tf

AUDIO_DEFAULTS: dict[str, Any] = {
    "speed": 0.0, "time_shift": 0.0, "gain_db": 0.0, "noise_snr_db": None, "noise_prob": 0.0,
    "time_masks": 0, "time_mask_width": 0, "freq_masks": 0, "freq_mask_width": 0,
}
IMAGE_DEFAULTS: dict[str, Any] = {"translation": 0.0, "rotation": 0.0}
DEFAULTS = {"audio": AUDIO_DEFAULTS, "image": IMAGE_DEFAULTS}
_INT_KEYS = ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width")
_FRACTION_KEYS = ("speed", "time_shift", "noise_prob", "translation")


def _closest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(name), valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _number(value: Any, where: str, negative: bool = False) -> float:
    """A finite float (>= 0 unless ``negative``) from a number or a numeric string (PyYAML
    reads ``1e-3`` as text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"config field {where!r}={value!r}: expected a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"config field {where!r}={value!r}: expected a number") from None
    if not math.isfinite(number) or (number < 0 and not negative):
        raise ValueError(f"config field {where!r}={value!r}: must be a finite number >= 0")
    return number


def check_settings(settings: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Validate augmentation settings; return them complete (defaults filled in), as plain data.

    Raises:
        ValueError: ``config field 'augment.<kind>.<key>'=value: problem``, naming the closest
            valid key for a typo.

    Example:
        >>> check_settings({"image": {"rotation": "15"}})["image"]
        {'translation': 0.0, 'rotation': 15.0}
        >>> check_settings({"audio": {"gain": 6}})
        Traceback (most recent call last):
        ...
        ValueError: config field 'augment.audio.gain': unknown setting; did you mean 'gain_db'? \
Valid: speed, time_shift, gain_db, noise_snr_db, noise_prob, time_masks, time_mask_width, \
freq_masks, freq_mask_width
    """
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ValueError(f"config field 'augment'={settings!r}: expected a mapping "
                         "{audio: {...}, image: {...}}")
    out: dict[str, dict[str, Any]] = {}
    for kind, values in settings.items():
        if kind not in DEFAULTS:
            raise ValueError(f"config field 'augment.{kind}': unknown modality kind"
                             f"{_closest(kind, list(DEFAULTS))} Valid: {', '.join(DEFAULTS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"config field 'augment.{kind}'={values!r}: expected a mapping of "
                             f"settings ({', '.join(DEFAULTS[kind])})")
        done = dict(DEFAULTS[kind])
        for key, value in values.items():
            where = f"augment.{kind}.{key}"
            if key not in done:
                valid = list(DEFAULTS[kind])
                raise ValueError(f"config field {where!r}: unknown setting"
                                 f"{_closest(key, valid)} Valid: {', '.join(valid)}")
            if key in _INT_KEYS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"config field {where!r}={value!r}: expected an integer "
                                     ">= 0")
                done[key] = value
            elif key == "noise_snr_db":
                if value is not None:
                    if not isinstance(value, list | tuple) or len(value) != 2:
                        raise ValueError(f"config field {where!r}={value!r}: expected "
                                         "[low, high] in dB, e.g. [5, 30]")
                    low, high = (_number(v, where, negative=True) for v in value)
                    if low > high:
                        raise ValueError(f"config field {where!r}={value!r}: expected "
                                         "[low, high] with low <= high")
                    value = [low, high]
                done[key] = value
            else:
                done[key] = _number(value, where)
                if key in _FRACTION_KEYS and done[key] > 1:
                    raise ValueError(f"config field {where!r}={value!r}: must be in [0, 1]")
        if kind == "audio" and done["noise_prob"] > 0 and done["noise_snr_db"] is None:
            raise ValueError("config field 'augment.audio.noise_prob': set noise_snr_db: "
                             "[low, high] too")
        out[kind] = done
    return out


def _uniform(shape: Any, seed: tf.Tensor, low: float | tf.Tensor, high: float | tf.Tensor):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _seed(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A ``[2]`` int32 stateless seed for one random draw of this batch."""
    seed = tf.cast(tf.reshape(seed, [-1]), tf.int64)
    mixed = tf.stack([seed[0], seed[-1] * 1_000_003 + salt])
    return tf.cast(tf.math.floormod(mixed, 2**31 - 1), tf.int32)


def augment_waveforms(waves: tf.Tensor, seed: tf.Tensor, settings: dict[str, Any]) -> tf.Tensor:
    """Speed, time shift, gain and noise at an SNR on ``[B, samples]`` float waveforms (same
    shape and dtype).

    ``seed``: an int tensor (``[2]``); the same seed gives the same result.
    """
    waves = tf.convert_to_tensor(waves, tf.float32)
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    if settings["speed"] > 0:
        factor = _uniform([batch, 1], _seed(seed, 0), 1 - settings["speed"],
                          1 + settings["speed"])
        source = tf.range(tf.cast(length, tf.float32))[None, :] * factor
        left = tf.cast(tf.floor(source), tf.int32)
        frac = source - tf.floor(source)
        padded = tf.pad(waves, [[0, 0], [0, 1]])  # the sample after the last one is 0

        def at(index: tf.Tensor) -> tf.Tensor:
            return tf.gather(padded, tf.minimum(index, length), batch_dims=1)

        waves = tf.where(left < length, at(left) * (1 - frac) + at(left + 1) * frac, 0.0)
    if settings["time_shift"] > 0:
        most = tf.cast(tf.round(settings["time_shift"] * tf.cast(length, tf.float32)), tf.int32)
        shift = tf.random.stateless_uniform([batch, 1], _seed(seed, 1), -most, most + 1, tf.int32)
        source = tf.range(length)[None, :] - shift
        inside = (source >= 0) & (source < length)
        moved = tf.gather(waves, tf.clip_by_value(source, 0, length - 1), batch_dims=1)
        waves = tf.where(inside, moved, 0.0)
    if settings["gain_db"] > 0:
        gain_db = _uniform([batch, 1], _seed(seed, 2), -settings["gain_db"], settings["gain_db"])
        waves = tf.clip_by_value(waves * 10.0 ** (gain_db / 20.0), -1.0, 1.0)
    if settings["noise_prob"] > 0:
        low, high = settings["noise_snr_db"]
        snr = _uniform([batch, 1], _seed(seed, 3), low, high + 1e-6)
        active = tf.cast(tf.not_equal(waves, 0.0), tf.float32)
        power = tf.reduce_sum(waves**2, 1, keepdims=True) / tf.maximum(
            tf.reduce_sum(active, 1, keepdims=True), 1.0)
        noise = tf.random.stateless_normal(tf.shape(waves), _seed(seed, 4))
        noise *= tf.sqrt(power / 10.0 ** (snr / 10.0))
        use = _uniform([batch, 1], _seed(seed, 5), 0.0, 1.0) < settings["noise_prob"]
        waves = tf.where(use, tf.clip_by_value(waves + noise, -1.0, 1.0), waves)
    return waves


def _band_masks(batch: tf.Tensor, size: tf.Tensor, count: int, width: int,
                seed: tf.Tensor) -> tf.Tensor:
    """``[B, size]`` bool: True where one of ``count`` random bands of ``[0, width]`` lies."""
    positions = tf.range(size)[None, None, :]
    widths = tf.random.stateless_uniform([batch, count, 1], _seed(seed, 6), 0, width + 1,
                                         tf.int32)
    widths = tf.minimum(widths, size)
    starts = tf.cast(tf.floor(_uniform([batch, count, 1], _seed(seed, 7), 0.0, 1.0)
                              * tf.cast(size - widths + 1, tf.float32)), tf.int32)
    return tf.reduce_any((positions >= starts) & (positions < starts + widths), axis=1)


def spec_augment(features: tf.Tensor, seed: tf.Tensor, settings: dict[str, Any]) -> tf.Tensor:
    """SpecAugment time and frequency masks on ``[B, frames, bands]`` features (set to 0)."""
    features = tf.convert_to_tensor(features)
    batch, frames, bands = (tf.shape(features)[i] for i in range(3))
    masked = tf.zeros([batch, frames, bands], tf.bool)
    if settings["time_masks"] and settings["time_mask_width"]:
        time = _band_masks(batch, frames, settings["time_masks"], settings["time_mask_width"],
                           _seed(seed, 10))
        masked |= time[:, :, None]
    if settings["freq_masks"] and settings["freq_mask_width"]:
        freq = _band_masks(batch, bands, settings["freq_masks"], settings["freq_mask_width"],
                           _seed(seed, 20))
        masked |= freq[:, None, :]
    return tf.where(masked, tf.zeros_like(features), features)


def augment_images(images: tf.Tensor, seed: tf.Tensor, settings: dict[str, Any]) -> tf.Tensor:
    """Random rotation and translation of ``[B, H, W, C]`` images; same shape and dtype."""
    if not (settings["rotation"] or settings["translation"]):
        return images
    dtype = images.dtype
    x = tf.cast(images, tf.float32)
    batch = tf.shape(x)[0]
    height, width = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
    angle = _uniform([batch], _seed(seed, 30), -1.0, 1.0) * settings["rotation"] * np.pi / 180
    move = _uniform([batch, 2], _seed(seed, 31), -1.0, 1.0) * settings["translation"]
    dy, dx = move[:, 0] * height, move[:, 1] * width
    cos, sin = tf.cos(angle), tf.sin(angle)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    # output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotate about the
    # centre, then shift
    a2 = cx - cos * (cx + dx) + sin * (cy + dy)
    b2 = cy - sin * (cx + dx) - cos * (cy + dy)
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if dtype.is_integer:
        out = tf.clip_by_value(tf.round(out), dtype.min, dtype.max)
    return tf.ensure_shape(tf.cast(out, dtype), images.shape)


def augmented_features(
    raw: tf.data.Dataset,
    preprocessor: Any,
    settings: dict[str, Any],
    kinds: dict[str, str],
    num_examples: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """The augmented training pipeline from raw ``(inputs, targets)`` batches.

    ``kinds`` maps modality names to their kinds (``{"audio": "audio", "image": "image"}``);
    ``settings`` as accepted by :func:`check_settings`. Raw examples are cached in memory; every
    epoch they are shuffled (``shuffle``), batched, augmented on the raw inputs, run through
    ``preprocessor`` and augmented on the features.
    """
    settings = check_settings(settings)
    audio, image = settings.get("audio"), settings.get("image")
    ds = raw.unbatch().cache()
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_examples))
    if shuffle:
        ds = ds.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, noise)

    def step(batch: tuple, randoms: tf.Tensor) -> tuple:
        inputs, targets = batch
        inputs = dict(inputs)
        for i, (name, kind) in enumerate(kinds.items()):
            salted = randoms + 1000 * (i + 1)
            if kind == "audio" and audio:
                inputs[name] = augment_waveforms(inputs[name], salted, audio)
            elif kind == "image" and image:
                inputs[name] = augment_images(inputs[name], salted, image)
        features = dict(preprocessor(inputs))
        for i, (name, kind) in enumerate(kinds.items()):
            if kind == "audio" and audio and (audio["time_masks"] or audio["freq_masks"]):
                features[name] = spec_augment(features[name], randoms + 7000 * (i + 1), audio)
        return features, targets

    return ds.map(step, num_parallel_calls=tf.data.AUTOTUNE)
