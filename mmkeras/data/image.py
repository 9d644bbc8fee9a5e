"""In-graph image front end: decoding, resizing, per-channel standardisation and augmentation.

`decode_image`, `resize` and `standardize_images` are core TensorFlow ops only (no
``tf.py_function``, no tensorflow-io), so they run in ``tf.data`` pipelines and export inside a
SavedModel. `read_image` is the checked offline reader: it decodes with the same TensorFlow
decoder, so offline and in-graph pixels are identical.

Standardisation is per channel (the last axis, as everywhere in :mod:`mmkeras.data.standardize`):
`fit_image_stats` pools the batch and pixel axes, i.e. one mean/std per colour channel, fitted
on the training split only. In a model, ``Standardizer.to_layer()`` does the same in the graph
and takes raw ``uint8`` pixels.

Augmentation (`ImageAugmentation`) is a Keras layer around ``RandomTranslation`` and
``RandomRotation`` that transforms only when called with ``training=True`` (inside ``fit``);
``predict``, ``evaluate``, a plain ``model(x)`` and the exported SavedModel pass images through
unchanged.

Example:
    >>> png = tf.io.encode_png(tf.zeros([28, 28, 1], tf.uint8))
    >>> decode_image(png, channels=1).shape
    TensorShape([28, 28, 1])
    >>> resize(tf.zeros([2, 28, 28, 1], tf.uint8), (14, 14)).shape
    TensorShape([2, 14, 14, 1])
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from mmkeras.data import fs
from mmkeras.data.standardize import Method, Standardizer, fit_stats

__all__ = [
    "ImageAugmentation",
    "decode_image",
    "fit_image_stats",
    "read_image",
    "resize",
    "standardize_images",
]


def decode_image(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode PNG/JPEG (also GIF, BMP, WebP; first frame) bytes -> ``uint8 [H, W, channels]``.

    ``channels`` is 1 (grey), 3 (RGB) or 4 (RGBA); colour images are converted as TensorFlow
    does (e.g. RGB -> grey by ITU-R 601 luma). 16-bit PNGs are scaled to ``uint8``. The channel
    axis has a static size; height and width are dynamic (``[None, None, channels]`` in a
    graph), so fix them with `resize` (or ``tf.ensure_shape``) before fixed-size layers.
    JPEG (grey or RGB) uses the accurate integer IDCT, pixel-equal to PIL; TensorFlow's default
    IDCT differs from it by up to 7 levels.
    """
    if channels not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")

    def any_format() -> tf.Tensor:
        return tf.io.decode_image(
            contents, channels=channels, dtype=tf.uint8, expand_animations=False
        )

    if channels == 4:  # JPEG has no alpha: decode_image reports that clearly
        image = any_format()
    else:
        image = tf.cond(
            tf.io.is_jpeg(contents),
            lambda: tf.io.decode_jpeg(contents, channels=channels, dct_method="INTEGER_ACCURATE"),
            any_format,
        )
    return tf.ensure_shape(image, [None, None, channels])


def resize(
    images: tf.Tensor, size: tuple[int, int], method: str = "bilinear", antialias: bool = True
) -> tf.Tensor:
    """Resize ``[H, W, C]`` or ``[N, H, W, C]`` images to ``size = (height, width)``, float32.

    Pixel values keep their range (``uint8`` input gives floats in [0, 255], not rescaled).
    ``method`` is any ``tf.image.ResizeMethod`` (``bilinear``, ``area``, ``nearest``,
    ``bicubic``, ...); ``antialias`` low-pass filters when shrinking.

    Example:
        >>> resize(tf.ones([4, 4, 1]), (2, 2), method="area").numpy()[..., 0].tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    images = tf.cast(images, tf.float32)
    return tf.image.resize(images, size, method=method, antialias=antialias)


def fit_image_stats(
    batches: Iterable[np.ndarray] | np.ndarray, method: Method = "zscore"
) -> Standardizer:
    """Per-channel :class:`Standardizer` from training images ``[N, H, W, C]`` (or batches).

    Batch and pixel axes are pooled: one center/scale per channel, exactly the numpy
    ``images.reshape(-1, C).mean(axis=0)`` / ``.std(axis=0)`` for ``zscore``.

    Example:
        >>> imgs = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
        >>> std = fit_image_stats(imgs)
        >>> bool(np.isclose(std.center[0], imgs.mean()))
        True
    """

    def checked(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise ValueError(f"image batches must be [N, H, W, C], got shape {batch.shape}")
        return batch.astype(np.float64)

    if isinstance(batches, np.ndarray):
        batches = [batches]
    return fit_stats((checked(b) for b in batches), method)


def standardize_images(images: tf.Tensor, standardizer: Standardizer) -> tf.Tensor:
    """``(images - center) / scale`` per channel in the graph, float32 (raw ``uint8`` is fine).

    The same arithmetic as ``standardizer.transform`` (float64, numpy) to float32 precision.
    """
    center = tf.constant(standardizer.center, tf.float32)
    scale = tf.constant(standardizer.scale, tf.float32)
    return (tf.cast(images, tf.float32) - center) / scale


@keras.saving.register_keras_serializable(package="mmkeras")
class ImageAugmentation(keras.layers.Layer):
    """Training-only augmentation ``[batch, H, W, C]``: random shift and rotation.

    ``translation`` is the largest shift as a fraction of height/width, ``rotation`` the
    largest angle as a fraction of a full turn (0.05 = 18 degrees); 0 disables either. Pixels
    shifted in repeat the nearest border pixel, which suits standardised or raw images alike.
    Put it after standardisation, before the encoder.

    Active only when called with ``training=True`` (as ``fit`` does). Keras' own random layers
    also transform when ``training`` is not given (a plain ``model(x)``); this wrapper treats
    that as inference, so ``model(x)``, ``predict``, ``evaluate`` and the exported SavedModel
    all see the images unchanged.

    Example:
        >>> aug = ImageAugmentation(seed=0)
        >>> x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
        >>> bool(np.array_equal(aug(x), x)), bool(np.array_equal(aug(x, training=True), x))
        (True, False)
    """

    def __init__(
        self, translation: float = 0.1, rotation: float = 0.05, seed: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.translation = float(translation)
        self.rotation = float(rotation)
        self.seed = seed
        self.steps: list[keras.layers.Layer] = []
        if self.translation:
            self.steps.append(keras.layers.RandomTranslation(
                self.translation, self.translation, fill_mode="nearest", seed=seed
            ))
        if self.rotation:
            self.steps.append(
                keras.layers.RandomRotation(self.rotation, fill_mode="nearest", seed=seed)
            )

    def build(self, input_shape: tuple) -> None:
        for step in self.steps:
            step.build(input_shape)

    def call(self, images, training=None):
        if not training:
            return images
        for step in self.steps:
            images = step(images, training=True)
        return images

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(translation=self.translation, rotation=self.rotation, seed=self.seed)
        return config


_TF_ERROR = re.compile(r"^(?:\{\{.*?\}\}\s*)?(.*?)(?:\s*\[Op:\w+\])?$", re.DOTALL)


def read_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """Read and decode one image file offline -> ``uint8 [H, W, channels]`` numpy array.

    Uses `decode_image` (TensorFlow's decoders), so the pixels equal the in-graph decode.

    Raises:
        ValueError: naming the file, if it cannot be read (missing, permission denied), is
            empty, is not a supported image format, or is corrupt or truncated (PNG chunk or
            CRC errors, JPEG data ending early). JPEG has no checksum: flipped bits inside its
            compressed data decode to wrong pixels without an error.

    Example:
        read_image("digit.png").shape
        (28, 28, 1)
    """
    path = os.fspath(path)
    try:
        raw = fs.read_bytes(path)
    except OSError as err:
        raise ValueError(f"{path}: cannot read image file: {err}") from err
    try:
        return decode_image(tf.constant(raw), channels).numpy()
    except tf.errors.OpError as err:
        message = _TF_ERROR.match(err.message.strip()).group(1)
        raise ValueError(f"{path}: corrupt or unsupported image: {message}") from err
