"""Training-time augmentation (mmkeras.data.augment): settings, each transform, the pipeline.

The transforms are checked on real FSDD clips and MNIST digits (avdigits); the pipeline through
the trainer's ``feature_dataset``: only the training split changes, a seed reproduces it, every
epoch differs, and a trained run's exported SavedModel holds none of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import avdigits
from mmkeras.config import ConfigError, resolve_config
from mmkeras.data.augment import (
    augment_images,
    augment_waveforms,
    check_settings,
    spec_augment,
)
from mmkeras.data.dataset import MultimodalDataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.models import build_models
from mmkeras.training.trainer import feature_dataset

AUDIO = {"time_shift": 0.1, "gain_db": 6, "noise_snr_db": [5, 30], "noise_prob": 0.5,
         "time_masks": 2, "time_mask_width": 8, "freq_masks": 2, "freq_mask_width": 6}
IMAGE = {"translation": 0.1, "rotation": 15}
SEED = tf.constant([3, 4])


@pytest.fixture(scope="module")
def small(data_dir) -> MultimodalDataset:
    """avdigits with 96 train, 32 val and 32 test examples (every 16th / 16th / 16th)."""
    full = avdigits.load()
    splits = {s: {k: v[::16][: 96 if s == "train" else 32] for k, v in a.items()}
              for s, a in full.splits.items()}
    return MultimodalDataset("avdigits", full.modalities, full.class_names, splits, full.info)


def _filled(audio=None, image=None) -> dict:
    return check_settings({k: v for k, v in (("audio", audio), ("image", image)) if v})


# ------------------------------------------------------------------------------- settings
def test_settings_are_completed_and_numbers_parsed():
    settings = check_settings({"audio": {"gain_db": "6", "noise_snr_db": ["-5", 20],
                                         "noise_prob": 0.5}, "image": None})
    assert settings == {"audio": {"speed": 0.0, "time_shift": 0.0, "gain_db": 6.0,
                                  "noise_snr_db": [-5.0, 20.0],
                                  "noise_prob": 0.5, "time_masks": 0, "time_mask_width": 0,
                                  "freq_masks": 0, "freq_mask_width": 0}}
    assert check_settings(None) == {} and check_settings({}) == {}
    cfg = resolve_config("data_pipelines/configs/avdigits.yaml", ["augment.image.rotation=1e1"])
    assert cfg.augment["image"] == {"translation": 0.1, "rotation": 10.0}  # merged into the file


@pytest.mark.parametrize("override, message", [
    ("augment={audio: {gain: 6}}", "'augment.audio.gain': unknown setting; did you mean 'gain_db'"),
    ("augment={imagee: {}}", "'augment.imagee': unknown modality kind; did you mean 'image'"),
    ("augment.audio.time_masks=1.5", "'augment.audio.time_masks'=1.5: expected an integer"),
    ("augment.audio.time_masks=true", "'augment.audio.time_masks'=True: expected an integer"),
    ("augment.audio.gain_db=loud", "'augment.audio.gain_db'='loud': expected a number"),
    ("augment.audio.gain_db=-3", "'augment.audio.gain_db'=-3: must be a finite number >= 0"),
    ("augment.image.translation=2", "'augment.image.translation'=2: must be in [0, 1]"),
    ("augment.audio.noise_snr_db=10", "'augment.audio.noise_snr_db'=10: expected [low, high]"),
    ("augment.audio.noise_snr_db=[30, 5]", "with low <= high"),
    ("augment.audio.noise_prob=0.5", "'augment.audio.noise_prob': set noise_snr_db"),
    ("augment=[audio]", "'augment'=['audio']: expected a mapping"),
])
def test_bad_settings_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, [override])
    assert message in str(err.value)


# ------------------------------------------------------------------------------- transforms
def test_waveforms_keep_shape_dtype_and_follow_the_seed(small):
    waves = tf.constant(small.splits["train"]["audio"][:16])
    settings = _filled(AUDIO)["audio"]
    out = augment_waveforms(waves, SEED, settings)
    assert out.shape == waves.shape and out.dtype == tf.float32
    np.testing.assert_array_equal(out, augment_waveforms(waves, SEED, settings))
    assert not np.allclose(out, augment_waveforms(waves, tf.constant([3, 5]), settings))
    assert float(tf.reduce_max(tf.abs(out))) <= 1.0
    assert not np.allclose(out, waves)


def test_time_shift_moves_the_clip_and_fills_zeros():
    ramp = tf.tile(tf.range(1, 101, dtype=tf.float32)[None] / 100, [8, 1])
    out = augment_waveforms(ramp, SEED, _filled({"time_shift": 0.2})["audio"]).numpy()
    for row in out:
        nonzero = np.flatnonzero(row)
        shift = round(row[nonzero[0]] * 100) - 1 - nonzero[0]  # source index - target index
        assert abs(shift) <= 20
        np.testing.assert_allclose(row[nonzero], ramp[0].numpy()[nonzero + shift], atol=1e-7)
        assert len(nonzero) == 100 - abs(shift)


def test_speed_resamples_duration_and_pitch():
    t = np.arange(8000) / 8000
    tone = np.where(t < 0.5, np.sin(2 * np.pi * 400 * t), 0).astype(np.float32)
    out = augment_waveforms(tf.constant(np.tile(tone, (8, 1))), SEED,
                            _filled({"speed": 0.2})["audio"]).numpy()
    length = np.array([np.flatnonzero(row).max() + 1 for row in out])
    peak = np.array([np.abs(np.fft.rfft(row)).argmax() for row in out])  # Hz (1 s clips)
    factor = 4000 / length  # played faster: shorter by the factor, higher by the same factor
    assert np.all((factor > 0.8 - 1e-3) & (factor < 1.2 + 1e-3)) and factor.std() > 0.02
    np.testing.assert_allclose(peak, 400 * factor, rtol=0.02)


def test_gain_stays_in_range_and_noise_has_the_asked_snr(small):
    waves = tf.constant(small.splits["train"]["audio"][:32] * 0.1)  # no clipping after +6 dB
    out = augment_waveforms(waves, SEED, _filled({"gain_db": 6})["audio"]).numpy()
    ratio = np.abs(out).max(1) / np.abs(waves.numpy()).max(1)
    assert ratio.min() >= 10 ** (-6 / 20) - 1e-5 and ratio.max() <= 10 ** (6 / 20) + 1e-5
    assert ratio.max() - ratio.min() > 0.5  # gains differ between clips
    noisy = augment_waveforms(
        waves, SEED, _filled({"noise_snr_db": [10, 10], "noise_prob": 1.0})["audio"]).numpy()
    clean = waves.numpy()
    active = clean != 0
    signal = (clean**2).sum(1) / active.sum(1)
    noise = ((noisy - clean) ** 2).mean(1)
    np.testing.assert_allclose(10 * np.log10(signal / noise), 10.0, atol=0.3)
    half = augment_waveforms(
        waves, SEED, _filled({"noise_snr_db": [10, 10], "noise_prob": 0.5})["audio"]).numpy()
    touched = np.any(half != clean, axis=1).mean()
    assert 0.2 < touched < 0.8


def test_spec_augment_masks_whole_bands_with_zeros():
    features = tf.random.stateless_normal([16, 63, 40], [0, 1]) + 5.0  # no zeros before
    settings = _filled({"time_masks": 2, "time_mask_width": 8, "freq_masks": 1,
                        "freq_mask_width": 6})["audio"]
    out = spec_augment(features, SEED, settings).numpy()
    assert out.shape == (16, 63, 40) and out.dtype == np.float32
    zero = out == 0
    frames, bands = zero.all(axis=2), zero.all(axis=1)
    np.testing.assert_array_equal(zero, frames[:, :, None] | bands[:, None, :])
    assert frames.sum(1).max() <= 16 and bands.sum(1).max() <= 6
    assert frames.sum() > 0 and bands.sum() > 0
    np.testing.assert_array_equal(out[~zero], features.numpy()[~zero])
    np.testing.assert_array_equal(out, spec_augment(features, SEED, settings))
    unchanged = spec_augment(features, SEED, _filled({"time_masks": 3})["audio"])  # width 0
    np.testing.assert_array_equal(unchanged, features)


def test_images_keep_dtype_and_move_the_digit(small):
    images = tf.constant(small.splits["train"]["image"][:16])
    out = augment_images(images, SEED, _filled(image=IMAGE)["image"])
    assert out.shape == images.shape and out.dtype == tf.uint8
    np.testing.assert_array_equal(out, augment_images(images, SEED, _filled(image=IMAGE)["image"]))
    assert not np.array_equal(out, images)
    # ink is kept up to the interpolation and what leaves the frame: within 15 %
    ink = tf.reduce_sum(tf.cast(images, tf.float32), [1, 2, 3])
    moved = tf.reduce_sum(tf.cast(out, tf.float32), [1, 2, 3])
    np.testing.assert_allclose(moved, ink, rtol=0.15)
    still = augment_images(images, SEED, _filled(image={"rotation": 0})["image"])
    np.testing.assert_array_equal(still, images)


# ------------------------------------------------------------------------------- pipeline
def _batches(ds: tf.data.Dataset) -> list:
    return [(x, y) for x, y in ds.as_numpy_iterator()]


def test_feature_dataset_augments_only_the_train_split(small):
    pre, _ = build_models(small.modalities, fit_preprocessing(small), 10, embed_dim=8)
    settings = check_settings({"audio": AUDIO, "image": IMAGE})

    def build(split, augment, seed=0):
        return feature_dataset(pre, small, split, 32, None, shuffle=False, seed=seed,
                               augment=augment)

    plain, augmented = _batches(build("train", None)), build("train", settings)
    assert augmented.element_spec == build("train", None).element_spec
    first, second = _batches(augmented), _batches(augmented)  # two epochs
    again = _batches(build("train", settings))  # a fresh pipeline, same seed
    other = _batches(build("train", settings, seed=1))
    # labels and order unchanged (shuffle off)
    for (xp, yp), (x1, y1), (x2, _), (xa, _), (xo, _) in zip(plain, first, second, again, other,
                                                            strict=True):
        np.testing.assert_array_equal(y1["probabilities"], yp["probabilities"])
        for name in ("audio", "image"):
            assert x1[name].shape == xp[name].shape and x1[name].dtype == xp[name].dtype
            assert not np.allclose(x1[name], xp[name])
            assert not np.allclose(x1[name], x2[name])  # new draws every epoch
            np.testing.assert_array_equal(x1[name], xa[name])  # reproducible with the seed
            assert not np.allclose(x1[name], xo[name])
        np.testing.assert_array_equal(x1["audio_present"], xp["audio_present"])
    for split in ("val", "test"):
        for (x, y), (xa, ya) in zip(_batches(build(split, None)), _batches(build(split, settings)),
                                    strict=True):
            np.testing.assert_array_equal(ya["probabilities"], y["probabilities"])
            for name in x:
                np.testing.assert_array_equal(xa[name], x[name])


def test_trained_run_exports_no_augmentation(small, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    from mmkeras.training.trainer import train

    cfg = resolve_config("data_pipelines/configs/avdigits.yaml", [
        "epochs=1", "verbose=0", f"output={tmp_path / 'run'}", "embed_dim=8",
        "augment={audio: {time_shift: 0.1, gain_db: 6, noise_snr_db: [5, 30], noise_prob: 1,"
        " time_masks: 2, time_mask_width: 8}, image: {translation: 0.1, rotation: 15}}"])
    result = train(cfg, dataset=small)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((result.export_dir / "saved_model.pb").read_bytes())
    ops = {n.op for g in saved.meta_graphs for n in g.graph_def.node}
    ops |= {n.op for g in saved.meta_graphs for f in g.graph_def.library.function
            for n in f.node_def}
    assert "StatefulPartitionedCall" in ops or "PartitionedCall" in ops  # a real graph
    assert not [op for op in ops if "Random" in op or "ProjectiveTransform" in op], sorted(ops)
    assert (result.run_dir / "config.yaml").read_text().count("time_shift: 0.1") == 1
