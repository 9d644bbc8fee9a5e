"""Issue 7's machine settings: validation folds around a fixed test set (``machine.load``), the
cross-validation table of ``bench_fusion.py --val-only``, the spectrogram encoder's
``input_stats``, ``spectral_peaks`` and ``spectral_max``, per-channel spectrum standardisation
and the ``ema_momentum`` weight average."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from data_pipelines import machine
from mmkeras.config import ConfigError, resolve_config
from mmkeras.encoders.spectrogram import SpectrogramEncoder
from tests.layer_harness import run_layer_test

SMALL = {"n_machines": 24, "runs_per_machine": 2, "duration_s": 9.0, "progress": False}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("machine-folds")


def _machines(ds) -> dict[str, set[str]]:
    return {name: set(split["machine_id"]) for name, split in ds.splits.items()}


def test_folds_keep_the_test_machines_and_rotate_validation(cache):
    default = _machines(machine.load(cache, **SMALL))
    folds = [_machines(machine.load(cache, val_fold=k, val_folds=3, **SMALL)) for k in range(3)]
    rest = default["train"] | default["val"]
    for fold in folds:
        assert fold["test"] == default["test"]
        assert not fold["train"] & fold["val"] and not (fold["train"] | fold["val"]) & fold["test"]
        assert fold["train"] | fold["val"] == rest
    vals = [fold["val"] for fold in folds]
    assert set().union(*vals) == rest and sum(len(v) for v in vals) == len(rest)
    for fold in folds:  # stratified: both kinds of machine (first run normal / bearing) in val
        labels = {int(m[1:]) % 2 for m in fold["val"]}
        assert labels == {0, 1}


def test_no_fold_is_the_default_split(cache):
    a = machine.load(cache, **SMALL)
    b = machine.load(cache, val_fold=None, val_folds=5, **SMALL)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[name]["run_id"], b.splits[name]["run_id"])
        np.testing.assert_array_equal(a.splits[name]["end_s"], b.splits[name]["end_s"])


@pytest.mark.parametrize("fold, folds", [(4, 4), (-1, 4), (0, 1)])
def test_bad_fold_is_refused(cache, fold, folds):
    with pytest.raises(ValueError, match="val_fold"):
        machine.load(cache, val_fold=fold, val_folds=folds, **SMALL)


def test_config_accepts_val_fold_and_checks_its_type():
    cfg = resolve_config(None, ["dataset_args.val_fold=2"])
    assert cfg.dataset_args["val_fold"] == 2
    with pytest.raises(ConfigError, match="val_fold"):
        resolve_config(None, ["dataset_args.val_fold=two"])


def test_spectrogram_encoder_input_stats_contract_and_masking():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 32, 16)).astype("float32")
    kwargs = {"embed_dim": 8, "filters": (4, 8), "kernel_size": 3, "utterance_norm": "mean",
              "input_stats": True}
    run_layer_test((SpectrogramEncoder, kwargs), [x],
                   expected_shapes={"tokens": (None, 8, 8), "mask": (None, 8), "pooled": (None, 8)})
    mask = np.ones((8, 32), "float32")
    mask[:, 20:] = 0
    mean, variance = SpectrogramEncoder._band_moments(keras.ops.convert_to_tensor(x), mask)
    np.testing.assert_allclose(mean[:, 0], x[:, :20].mean(1), atol=1e-5)
    np.testing.assert_allclose(np.sqrt(variance[:, 0]), x[:, :20].std(1), atol=1e-4)
    encoder = SpectrogramEncoder(embed_dim=8, filters=(4,), input_stats=True)
    changed = x.copy()
    changed[:, 20:] = 100.0
    a, b = (keras.ops.convert_to_numpy(encoder(v, step_mask=mask)["pooled"]) for v in (x, changed))
    np.testing.assert_array_equal(a, b)


def test_spectral_peaks_find_a_peak_wherever_it_sits():
    bins, channels = 40, 2
    x = np.zeros((3, 16, channels * bins), "float32")
    for i, peak in enumerate((10, 17, 25)):  # the same line at three frequencies, channel 0
        x[i, :, peak] = 5.0
    kwargs = {"embed_dim": 8, "filters": (4,), "spectral_peaks": 6, "channels": channels}
    run_layer_test((SpectrogramEncoder, kwargs), [x],
                   expected_shapes={"tokens": (None, 8, 8), "mask": (None, 8), "pooled": (None, 8)})
    encoder = SpectrogramEncoder(**kwargs)
    encoder(x)
    mean, _ = SpectrogramEncoder._band_moments(keras.ops.convert_to_tensor(x), None)
    peaks = keras.ops.convert_to_numpy(encoder._peaks(mean[:, 0]))
    assert peaks.shape == (3, 6) and peaks[0].any()
    np.testing.assert_allclose(peaks[1], peaks[0], rtol=1e-5)
    np.testing.assert_allclose(peaks[2], peaks[0], rtol=1e-5)
    moved = x.copy()  # the same line in channel 1 is a different feature
    moved[0, :, 10], moved[0, :, bins + 10] = 0.0, 5.0
    other = keras.ops.convert_to_numpy(encoder._peaks(
        SpectrogramEncoder._band_moments(keras.ops.convert_to_tensor(moved), None)[0][:, 0]))
    assert not np.allclose(other[0], peaks[0])
    convless = {"embed_dim": 8, "filters": (), "spectral_peaks": 4, "channels": channels}
    run_layer_test((SpectrogramEncoder, convless), [x],
                   expected_shapes={"tokens": (None, 16, 8), "mask": (None, 16),
                                    "pooled": (None, 8)})
    encoder = SpectrogramEncoder(**convless)
    mask = np.ones((3, 16), "float32")
    mask[:, 12:] = 0
    changed = x.copy()
    changed[:, 12:] = 100.0  # masked frames reach no output
    a, b = (encoder(v, step_mask=mask) for v in (x, changed))
    for key in ("tokens", "pooled"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a[key]),
                                      keras.ops.convert_to_numpy(b[key]))
    with pytest.raises(ValueError, match="channels=3"):
        SpectrogramEncoder(embed_dim=8, spectral_peaks=2, channels=3)(x)
    with pytest.raises(ValueError, match="spectral_peaks"):
        SpectrogramEncoder(embed_dim=8, spectral_peaks=-1)


def test_spectral_max_is_each_channels_strongest_line():
    bins, channels = 20, 3
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 10, channels * bins)).astype("float32")
    x[0, :, 7] += 6.0  # a line in channel 0, then the same line 2 dB stronger
    x[1] = x[0]
    x[1, :, 7] += 2.0
    kwargs = {"embed_dim": 8, "filters": (), "spectral_max": True, "channels": channels}
    run_layer_test((SpectrogramEncoder, kwargs), [x],
                   expected_shapes={"tokens": (None, 10, 8), "mask": (None, 10),
                                    "pooled": (None, 8)})
    encoder = SpectrogramEncoder(**kwargs)
    mask = np.ones((4, 10), "float32")
    mask[:, 8:] = 0
    encoder(x, step_mask=mask)
    mean, _ = SpectrogramEncoder._band_moments(keras.ops.convert_to_tensor(x), mask)
    maxima = keras.ops.convert_to_numpy(keras.ops.max(encoder._spectra(mean[:, 0]), axis=-1))
    expected = x[:, :8].mean(1).reshape(4, channels, bins).max(-1)
    np.testing.assert_allclose(maxima, expected, atol=1e-5)
    assert maxima[1, 0] - maxima[0, 0] == pytest.approx(2.0, abs=1e-5)
    # the projection takes the frames' mean and max (2 x 60) and one maximum per channel
    plain = SpectrogramEncoder(embed_dim=8, filters=(), channels=channels)
    plain(x)
    assert encoder.count_params() - plain.count_params() == channels * 8
    assert SpectrogramEncoder.from_config(encoder.get_config()).spectral_max
    with pytest.raises(ValueError, match="channels=7"):
        SpectrogramEncoder(embed_dim=8, spectral_max=True, channels=7)(x)


def test_spectrum_standardised_per_channel(cache):
    from mmkeras.data.preprocessing import fit_preprocessing, fixed_transform
    from mmkeras.data.standardize import Standardizer

    per_bin = machine.load(cache, **SMALL)
    per_channel = machine.load(cache, vibration_standardize="channel", **SMALL)
    train = per_bin.splits["train"]["vibration"][:64]
    spectra = keras.ops.convert_to_numpy(fixed_transform(per_bin.modalities["vibration"])(train))
    state = fit_preprocessing(per_channel)["vibration"]["standardizer"]
    center, scale = np.reshape(state["center"], (3, -1)), np.reshape(state["scale"], (3, -1))
    full = fit_preprocessing(per_bin)["vibration"]["standardizer"]
    for c in range(3):  # one mean and std per channel: those of all its bins together
        assert np.ptp(center[c]) == 0 and np.ptp(scale[c]) == 0
        assert spectra.shape[-1] == 3 * center.shape[1]
        values = np.reshape(full["center"], (3, -1))[c]
        assert center[c, 0] == pytest.approx(values.mean())
    pooled = Standardizer("zscore", np.array(full["center"]), np.array(full["scale"])).pooled(3)
    np.testing.assert_allclose(pooled.scale, np.ravel(scale))
    rows = spectra.reshape(-1, 3, spectra.shape[-1] // 3)[:, 0].ravel().astype(np.float64)
    small = Standardizer("zscore", spectra.reshape(-1, spectra.shape[-1]).mean(0),
                         spectra.reshape(-1, spectra.shape[-1]).std(0)).pooled(3)
    assert small.center[0] == pytest.approx(rows.mean(), rel=1e-5)
    assert small.scale[0] == pytest.approx(rows.std(), rel=1e-4)
    with pytest.raises(ValueError, match="modality 'vibration': spectrogram option standardize "
                                         "must be one of bin, channel; got 'band'"):
        fit_preprocessing(machine.load(cache, vibration_standardize="band", **SMALL))


def test_audio_band_kurtosis_trains_and_exports(cache_dir, tmp_path):
    """``audio_kurtosis_bands`` adds one feature per band after the mel bands, standardised
    from the training split, and the export carries it."""
    import json

    from mmkeras.data.preprocessing import fit_preprocessing
    from mmkeras.training.trainer import train
    from tests.conftest import TINY_MACHINE

    ds = machine.load(cache_dir, audio_kurtosis_bands=[[1000, 4000]], **TINY_MACHINE)
    state = fit_preprocessing(ds)["audio"]["standardizer"]
    assert len(state["center"]) == 41
    bearing = ds.splits["train"]["label"] == machine.CLASSES.index("bearing_wear")
    audio = ds.splits["train"]["audio"]
    band = np.fft.irfft(np.fft.rfft(audio) * (np.fft.rfftfreq(8000, 1 / 8000) >= 1000), n=8000)
    kurtosis = np.log((band ** 4).mean(1) / (band ** 2).mean(1) ** 2)
    assert state["center"][-1] == pytest.approx(kurtosis.mean(), abs=1e-4)
    assert kurtosis[bearing].min() > kurtosis[~bearing].max()  # what the feature is for
    cfg = resolve_config(None, ["epochs=1", "embed_dim=8", "verbose=0", "strategy=default",
                                f"output={tmp_path / 'run'}"])
    result = train(cfg, dataset=ds)
    # loaded without keras or mmkeras, core ops only, the Keras model's probabilities
    assert json.loads((result.run_dir / "export_validation.json").read_text())["ok"]


@pytest.mark.parametrize("value", ["1", "-0.1", "true"])
def test_ema_momentum_is_checked(value):
    with pytest.raises(ConfigError, match="ema_momentum"):
        resolve_config(None, [f"ema_momentum={value}"])


def test_averaged_weights_are_validated_kept_and_resumed(tiny_machine, tmp_path):
    """With ``ema_momentum``, the final model is the averaged weights of the kept epoch (its
    validation loss is the logged one), also when a resume finds nothing left to train."""
    import tensorflow as tf

    from mmkeras.training.trainer import _batched_predict, _fit

    def val_loss(model) -> float:
        p, y = _batched_predict(model, tiny_machine, "val", 64)
        return float(np.mean(-np.log(p[np.arange(len(y)), y])))

    cfg = resolve_config(None, ["epochs=3", "embed_dim=8", "early_stopping=2", "verbose=0",
                                "ema_momentum=0.8", "learning_rate=1e-2"])
    keras.utils.set_random_seed(0)
    model, history = _fit(cfg, tiny_machine, tf.distribute.get_strategy(), tmp_path, chief=True)
    kept = min(history["val_loss"])
    assert val_loss(model) == pytest.approx(kept, rel=1e-4)
    again, _ = _fit(cfg, tiny_machine, tf.distribute.get_strategy(), tmp_path, chief=True)
    assert val_loss(again) == pytest.approx(kept, rel=1e-4)


def test_val_only_table_lists_every_run():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fusion.py"
    spec = importlib.util.spec_from_file_location("bench_fusion", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = [{"kind": "fusion", "name": "sum", "fold": k, "seed": 0, "val_loss": loss,
             "val_accuracy": acc, "epochs_run": 10, "job_s": 30.0}
            for k, (loss, acc) in enumerate([(0.1, 0.96), (0.3, 0.92)])]
    text = bench.val_markdown(runs, "header")
    assert "| sum | 2 | 0.2000 ± 0.1414 | 0.940 ± 0.028 | 10.0 | 30 |" in text
    assert "0/0: 0.1000 0.960, 1/0: 0.3000 0.920" in text


def test_prepare_statistics_pool_the_spectrum_per_channel_too():
    """The Beam preparation's combiner gives the in-memory fit's per-channel state."""
    from mmkeras.data.beam_prepare import PreprocessingStats
    from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
    from mmkeras.data.preprocessing import fit_preprocessing

    x = np.random.default_rng(0).normal(size=(40, 64, 3)).astype("float32") * [1.0, 2.0, 3.0]
    options = {"rate_hz": 100,
               "spectrogram": {"n_fft": 16, "hop_length": 8, "standardize": "channel"}}
    spec = ModalitySpec("v", "timeseries", (64, 3), options=options)
    splits = {name: {"v": x, "label": np.zeros(40, "int32")} for name in ("train", "val", "test")}
    memory = fit_preprocessing(MultimodalDataset("t", {"v": spec}, ["a"], splits, {}))
    combiner = PreprocessingStats({"v": {"name": "v", "kind": "timeseries", "shape": [64, 3],
                                         "dtype": "float32", "options": options}})
    acc = combiner.create_accumulator()
    for example in x:
        acc = combiner.add_input(acc, {"v": example})
    state = combiner.extract_output(acc)["state"]["v"]["standardizer"]
    want = memory["v"]["standardizer"]
    np.testing.assert_allclose(state["center"], want["center"], rtol=1e-6)
    np.testing.assert_allclose(state["scale"], want["scale"], rtol=1e-6)
    assert len(set(np.round(want["scale"], 9))) == 3  # one scale per channel
