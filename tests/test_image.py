"""Tests for mmkeras.data.image and mmkeras.encoders.ImageEncoder on real MNIST digits.

Needs MMKERAS_DATA_DIR with mnist/ (conftest's ``data_dir`` fails when unset). PNG/JPEG files
are made here from the real digits with Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipelines.avdigits import IMAGE_POOLS, read_mnist
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset, to_tf_dataset
from mmkeras.data.image import (
    ImageAugmentation,
    decode_image,
    fit_image_stats,
    read_image,
    resize,
    standardize_images,
)
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.encoders.image import ImageEncoder
from mmkeras.layers import load_model
from mmkeras.models import build_models, end_to_end


@pytest.fixture(scope="module")
def mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_mnist(data_dir / "mnist")


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    """Eight real MNIST test digits, uint8 [8, 28, 28]."""
    return mnist[0][:8]


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decode_grey_in_graph(contents: tf.Tensor) -> tf.Tensor:
    image = decode_image(contents, channels=1)
    assert image.shape.as_list() == [None, None, 1]  # static channel axis at trace time
    return image


def test_decode_png_is_exact_grey_and_rgb(digits):
    for digit in digits:
        image = _decode_grey_in_graph(tf.constant(_encode(digit, "PNG")))
        assert image.dtype == tf.uint8
        np.testing.assert_array_equal(image.numpy()[..., 0], digit)
    rgb = np.stack([digits[0], 255 - digits[1], digits[2] // 2], axis=-1)
    decoded = decode_image(_encode(rgb, "PNG"), channels=3)
    assert decoded.shape == (28, 28, 3)
    np.testing.assert_array_equal(decoded.numpy(), rgb)


def test_decode_jpeg_is_close(digits):
    for digit in digits:
        image = _decode_grey_in_graph(tf.constant(_encode(digit, "JPEG", quality=95)))
        err = np.abs(image.numpy()[..., 0].astype(int) - digit)
        assert image.shape == (28, 28, 1)
        assert err.mean() < 2.0 and err.max() <= 32, (err.mean(), err.max())


def test_decode_rejects_bad_channel_count():
    with pytest.raises(ValueError, match="channels"):
        decode_image(tf.constant(b""), channels=2)


def test_resize_area_and_nearest_match_numpy(digits):
    x = digits[..., None]
    half = resize(x, (14, 14), method="area")
    expected = x.reshape(8, 14, 2, 14, 2, 1).astype(np.float64).mean(axis=(2, 4))
    assert half.dtype == tf.float32 and half.shape == (8, 14, 14, 1)
    np.testing.assert_allclose(half.numpy(), expected, atol=1e-4)
    double = resize(x[0], (56, 56), method="nearest")
    assert double.shape == (56, 56, 1)
    np.testing.assert_array_equal(double.numpy(), x[0].repeat(2, axis=0).repeat(2, axis=1))
    same = resize(x, (28, 28))  # bilinear to the same size is the identity
    np.testing.assert_allclose(same.numpy(), x, atol=1e-4)


def test_per_channel_stats_equal_numpy_on_train_split(mnist):
    images, labels = mnist
    lo, hi = IMAGE_POOLS["train"]
    train = images[lo:hi, ..., None]
    batches = [train[i:i + 512] for i in range(0, len(train), 512)]
    std = fit_image_stats(batches)
    np.testing.assert_allclose(std.center, [train.mean(dtype=np.float64)], rtol=1e-12)
    np.testing.assert_allclose(std.scale, [train.std(dtype=np.float64)], rtol=1e-10)

    rgb = np.concatenate([train, 255 - train, train // 2], axis=-1)  # three different channels
    std3 = fit_image_stats(rgb)
    flat = rgb.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(std3.center, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std3.scale, flat.std(axis=0), rtol=1e-10)
    graph = standardize_images(tf.constant(rgb[:16]), std3).numpy()
    np.testing.assert_allclose(graph, std3.transform(rgb[:16]), rtol=1e-5, atol=1e-5)

    # The trainer's path (fit_preprocessing on an image modality) gives the same statistics.
    ds = MultimodalDataset(
        "digits", {"image": ModalitySpec("image", "image", (28, 28, 1), "uint8")},
        [str(d) for d in range(10)],
        {"train": {"image": train, "label": labels[lo:hi].astype(np.int32)}},
    )
    state = fit_preprocessing(ds)["image"]["standardizer"]
    np.testing.assert_allclose(state["center"], std.center, rtol=1e-12)
    np.testing.assert_allclose(state["scale"], std.scale, rtol=1e-10)
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        fit_image_stats(train[..., 0])


def test_augmentation_only_when_training(digits, tmp_path):
    x = ((digits[..., None] - 33.8) / 78.0).astype(np.float32)
    aug = ImageAugmentation(translation=0.2, rotation=0.1, seed=1, name="aug")
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, aug(inputs))
    for out in (aug(x), aug(x, training=False), model(x), model.predict(x, verbose=0)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), x)
    moved = keras.ops.convert_to_numpy(model(x, training=True))
    assert moved.shape == x.shape and not np.allclose(moved, x)
    model.save(tmp_path / "aug.keras")
    restored = keras.saving.load_model(tmp_path / "aug.keras").get_layer("aug")
    assert restored.get_config() == aug.get_config()
    assert len(ImageAugmentation(translation=0.0).steps) == 1


def _image_dataset(images: np.ndarray, labels: np.ndarray, augment: dict | None):
    options = {"augment": augment} if augment else {}
    spec = ModalitySpec("image", "image", (28, 28, 1), "uint8", options=options)
    return MultimodalDataset(
        "digits", {"image": spec}, [str(d) for d in range(10)],
        {"train": {"image": images[..., None], "label": labels.astype(np.int32)}},
    )


@pytest.mark.parametrize("fusion", ["early", "concat", "late_mean"])
def test_image_fusion_models_train_and_round_trip(fusion, mnist, tmp_path):
    images, labels = mnist
    augment = {"translation": 0.1, "rotation": 0.05} if fusion != "early" else None
    ds = _image_dataset(images[:64], labels[:64], augment)
    keras.utils.set_random_seed(0)
    pre, task = build_models(ds.modalities, fit_preprocessing(ds), 10, fusion=fusion,
                             embed_dim=16)
    trainee = task.training_model()
    trainee.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = next(iter(to_tf_dataset(ds, "train", 32)))
    assert np.isfinite(trainee.train_on_batch(pre(x), y))
    model = end_to_end(pre, task)
    expected = model.predict(x, verbose=0)["probabilities"]
    np.testing.assert_allclose(model(x)["probabilities"], expected, rtol=1e-6, atol=1e-7)
    path = tmp_path / f"{fusion}.keras"
    model.save(path)
    restored = load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0)["probabilities"], expected,
                               rtol=1e-6, atol=1e-7)
    if augment:  # the augmentation is in the model and active in training mode
        train_mode = keras.ops.convert_to_numpy(model(x, training=True)["probabilities"])
        assert not np.allclose(train_mode, expected, atol=1e-4)


def test_image_encoder_config_and_keras_round_trip(digits, tmp_path):
    enc = ImageEncoder(embed_dim=8, filters=(4, 8), grid=3, name="enc")
    config = enc.get_config()
    assert (config["embed_dim"], config["filters"], config["grid"]) == (8, [4, 8], 3)
    assert ImageEncoder.from_config(config).get_config() == config
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, enc(inputs)["pooled"])
    assert enc.grid_pool.pool_size == (3, 3)  # 28 -> 14 -> 7 -> 3x3 grid
    x = (digits[..., None] / 255.0).astype(np.float32)
    expected = model.predict(x, verbose=0)
    assert expected.shape == (8, 8)
    model.save(tmp_path / "enc.keras")
    restored = keras.saving.load_model(tmp_path / "enc.keras")
    assert isinstance(restored.get_layer("enc"), ImageEncoder)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)
    with pytest.raises(ValueError, match="static sizes"):
        ImageEncoder(4)(keras.Input((None, None, 1)))


def test_read_image_matches_decode(digits, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(_encode(digits[0], "PNG"))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (28, 28, 1)
    np.testing.assert_array_equal(image[..., 0], digits[0])
    assert read_image(path, channels=3).shape == (28, 28, 3)


def _corruptions(digit: np.ndarray) -> dict[str, bytes]:
    png, jpeg = _encode(digit, "PNG"), _encode(digit, "JPEG", quality=95)
    idat = png.find(b"IDAT")
    flipped = bytearray(png)
    flipped[idat + 10] ^= 0x01  # compressed pixel data no longer matches the chunk's CRC
    return {
        "truncated.png": png[: len(png) // 2],
        "no_end.png": png[:-12],  # IEND chunk cut off
        "bad_crc.png": bytes(flipped),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "no_header.jpg": jpeg[:2] + bytes(40) + jpeg[42:],  # JPEG markers overwritten
        "empty.png": b"",
        "not_an_image.png": b"RIFF\x00\x00\x00\x00WAVEfmt ",
    }


def test_read_image_rejects_corrupt_files_naming_them(digits, tmp_path):
    for name, raw in _corruptions(digits[1]).items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=rf"{name}: corrupt or unsupported image: \w"):
            read_image(path)
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=r"missing\.png: cannot read image file"):
        read_image(missing)
