"""Tests for mmkeras.data.audio against librosa 0.11 / soundfile on real FSDD recordings.

Needs MMKERAS_DATA_DIR with fsdd/recordings/*.wav (conftest's ``data_dir`` fails when unset).
"""

from __future__ import annotations

import io
from pathlib import Path

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from mmkeras.data.audio import (
    LogMelAndKurtosis,
    LogMelSpectrogram,
    Mfcc,
    decode_wav,
    mel_filterbank,
    pad_or_crop,
    read_audio,
    resample,
)

SR, N_FFT, HOP, N_MELS = 8000, 256, 128, 40
# Mel power metric: per clip, max over (frame, mel) of |a - b| / max(b, MEL_FLOOR * max(b)).
# Tolerances (justified in the mmkeras.data.audio docstring): measured worst cases over 1000
# FSDD clips are 3.4e-5 (mel), 8.8e-4 dB (log-mel, top_db=80) and 2.3e-4 dB (MFCC), while a
# symmetric instead of periodic Hann window already gives >= 4e-2 and >= 0.18 dB.
MEL_FLOOR = 1e-6
MEL_RTOL = 1e-4
DB_ATOL = 5e-3


@pytest.fixture(scope="module")
def fsdd_files(data_dir: Path) -> list[Path]:
    """Deterministic sample of 20 FSDD clips (every 150th of the sorted 3000)."""
    files = sorted((data_dir / "fsdd" / "recordings").glob("*.wav"))
    if len(files) < 20:
        pytest.fail(
            f"expected FSDD recordings under {data_dir}/fsdd/recordings, found {len(files)}"
        )
    return files[:: len(files) // 20][:20]


@pytest.fixture(scope="module")
def clips(fsdd_files: list[Path]) -> list[np.ndarray]:
    return [sf.read(f, dtype="float64")[0] for f in fsdd_files]


def _mel_rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float((np.abs(ours - ref) / np.maximum(ref, MEL_FLOOR * ref.max())).max())


def _librosa_mel(y: np.ndarray, **kw) -> np.ndarray:
    kw = {"sr": SR, "n_fft": N_FFT, "hop_length": HOP, "n_mels": N_MELS, **kw}
    mel = librosa.feature.melspectrogram(
        y=y, window="hann", htk=False, norm="slaney", dtype=np.float64, **kw
    )
    return mel.T


@pytest.mark.parametrize(
    "kw",
    [
        {"sr": 8000, "n_fft": 256, "n_mels": 40},
        {"sr": 16000, "n_fft": 400, "n_mels": 80, "fmin": 20.0, "fmax": 7600.0},
        {"sr": 22050, "n_fft": 2048, "n_mels": 128},
    ],
)
def test_filterbank_matches_librosa(kw: dict) -> None:
    ours = mel_filterbank(kw["sr"], kw["n_fft"], kw["n_mels"], kw.get("fmin", 0.0), kw.get("fmax"))
    ref = librosa.filters.mel(**kw, htk=False, norm="slaney")
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_mel_power_db_and_mfcc_match_librosa(clips: list[np.ndarray]) -> None:
    mel_layer = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS, log=False)
    db_layer = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS, top_db=80.0)
    mfcc_layer = Mfcc(n_mfcc=20, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    mel_errs, db_errs, mfcc_errs = [], [], []
    for y in clips:
        ref = _librosa_mel(y)
        x = y[None].astype(np.float32)
        mel = mel_layer(x).numpy()[0].astype(np.float64)
        assert mel.shape == ref.shape
        mel_errs.append(_mel_rel_err(mel, ref))
        ref_db = librosa.power_to_db(ref, ref=1.0, top_db=80.0)
        db_errs.append(np.abs(db_layer(x).numpy()[0] - ref_db).max())
        ref_mfcc = librosa.feature.mfcc(
            y=y, sr=SR, n_mfcc=20, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, dtype=np.float64
        ).T
        mfcc_errs.append(np.abs(mfcc_layer(x).numpy()[0] - ref_mfcc).max())
    print(
        f"\nmel rel err max {max(mel_errs):.2e} median {np.median(mel_errs):.2e}; "
        f"dB abs err max {max(db_errs):.2e}; "
        f"mfcc abs err max {max(mfcc_errs):.2e} median {np.median(mfcc_errs):.2e} dB"
    )
    assert max(mel_errs) < MEL_RTOL
    assert max(db_errs) < DB_ATOL
    assert max(mfcc_errs) < DB_ATOL


@pytest.mark.parametrize(
    "kw",
    [
        {"pad_mode": "reflect", "power": 1.0},
        {"pad_mode": "edge", "fmin": 100.0, "fmax": 3500.0, "n_mels": 32},
        {"pad_mode": "symmetric", "n_fft": 200, "hop_length": 80},
        {"center": False, "n_fft": 512, "hop_length": 160, "n_mels": 64},
    ],
)
def test_mel_options_match_librosa(clips: list[np.ndarray], kw: dict) -> None:
    layer = LogMelSpectrogram(**{"sample_rate": SR, "log": False, **kw})
    for y in clips[:3]:
        ref = _librosa_mel(y, **kw)
        assert _mel_rel_err(layer(y[None].astype(np.float32)).numpy()[0], ref) < MEL_RTOL


def test_decode_wav_and_read_audio_match_soundfile(fsdd_files: list[Path], tmp_path: Path) -> None:
    decode = tf.function(decode_wav, input_signature=[tf.TensorSpec([], tf.string)])
    stereo = tmp_path / "stereo.wav"
    left = sf.read(fsdd_files[0], dtype="int16")[0]
    sf.write(stereo, np.stack([left, left[::-1]], axis=1), SR, subtype="PCM_16")
    for path in [*fsdd_files[:5], stereo]:
        ref, ref_rate = sf.read(path, dtype="float32", always_2d=True)
        ref = ref.mean(axis=1, dtype=np.float32)
        audio, rate = decode(tf.io.read_file(str(path)))
        assert int(rate) == ref_rate == SR
        np.testing.assert_array_equal(audio.numpy(), ref)
        ours, ours_rate = read_audio(path, expected_rate=SR)
        assert ours_rate == SR and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)


def test_read_audio_flac_ogg_and_resampling(fsdd_files: list[Path], tmp_path: Path) -> None:
    wav, _ = read_audio(fsdd_files[0])
    flac, ogg = tmp_path / "a.flac", tmp_path / "a.ogg"
    sf.write(flac, wav, SR, subtype="PCM_16")
    sf.write(ogg, wav, SR)
    np.testing.assert_array_equal(read_audio(flac)[0], wav)  # lossless
    assert read_audio(ogg)[1] == SR and abs(len(read_audio(ogg)[0]) - len(wav)) <= 1
    up, rate = read_audio(fsdd_files[0], target_rate=16000)
    assert rate == 16000 and len(up) == 2 * len(wav)
    np.testing.assert_array_equal(up, resample(wav, SR, 16000).numpy())


def test_read_audio_rejects_bad_files(fsdd_files: list[Path], tmp_path: Path) -> None:
    raw = fsdd_files[0].read_bytes()
    flac = io.BytesIO()
    sf.write(flac, sf.read(fsdd_files[0])[0], SR, format="FLAC")
    bad = {
        "truncated.wav": (raw[: len(raw) // 2], "truncated"),
        "header_only.wav": (raw[:44], "truncated"),
        "no_data.wav": (raw[:36], "data"),
        "random.wav": (np.random.default_rng(0).bytes(2000), "cannot decode"),
        "empty.flac": (b"", "cannot decode"),
        "truncated.flac": (flac.getvalue()[: len(flac.getvalue()) // 2], "cannot decode"),
    }
    for name, (data, problem) in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=problem) as info:
            read_audio(path)
        assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="8000 Hz, expected 16000 Hz") as info:
        read_audio(fsdd_files[0], expected_rate=16000)
    assert str(fsdd_files[0]) in str(info.value)


def test_pad_or_crop() -> None:
    x = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(pad_or_crop(x, 2), [[1, 2], [4, 5]])
    np.testing.assert_array_equal(pad_or_crop(x, 5), [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0]])
    fn = tf.function(lambda a: pad_or_crop(a, 4), input_signature=[tf.TensorSpec([None])])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [4]
    np.testing.assert_array_equal(fn(tf.constant([1.0])), [1, 0, 0, 0])


def test_resample(clips: list[np.ndarray]) -> None:
    t = np.arange(8000) / SR
    for new in (16000, 22050, 6000):
        tone_freq = 0.4 * min(SR, new)  # 80 % of the lower Nyquist
        tone = np.sin(2 * np.pi * tone_freq * t).astype(np.float32)
        out = resample(tone, SR, new).numpy()
        assert len(out) == int(np.ceil(8000 * new / SR))
        exact = np.sin(2 * np.pi * tone_freq * np.arange(len(out)) / new)
        mid = slice(len(out) // 4, 3 * len(out) // 4)  # away from the zero-padded edges
        assert np.abs(out[mid] - exact[mid]).max() < 2e-6  # measured <= 4e-7
    y = clips[0].astype(np.float32)
    np.testing.assert_array_equal(resample(y, SR, SR).numpy(), y)
    ours = resample(y, SR, 16000).numpy()
    ref = librosa.resample(clips[0], orig_sr=SR, target_sr=16000)  # soxr_hq
    band = np.fft.rfftfreq(len(ref), 1 / 16000) <= 0.9 * SR / 2
    diff = np.fft.rfft(ours) - np.fft.rfft(ref)
    assert np.linalg.norm(diff[band]) / np.linalg.norm(np.fft.rfft(ref)[band]) < 1e-2
    # Rates as graph tensors (e.g. from decode_wav) give the same result.
    rate = tf.TensorSpec([], tf.int32)
    fn = tf.function(resample, input_signature=[tf.TensorSpec([None, None]), rate, rate])
    batch = np.stack([y, y[::-1]])
    np.testing.assert_allclose(fn(batch, SR, 16000)[0].numpy(), ours, atol=1e-6)


def _tiny_model() -> keras.Model:
    wave = keras.Input(shape=(None,), name="wave")
    mel = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS, top_db=80.0)(wave)
    mfcc = Mfcc(n_mfcc=13, sample_rate=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)(wave)
    pooled = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling1D()(mel), keras.layers.GlobalAveragePooling1D()(mfcc)]
    )
    return keras.Model(wave, keras.layers.Dense(3)(pooled))


def test_static_output_shape(clips: list[np.ndarray]) -> None:
    layer = Mfcc(n_mfcc=13, sample_rate=SR)
    out = layer(keras.Input(shape=(len(clips[0]),)))
    assert out.shape == (None, 1 + len(clips[0]) // HOP, 13)
    assert layer(clips[0][None]).shape == (1, out.shape[1], 13)
    assert LogMelSpectrogram(center=False).compute_output_shape((2, 8000)) == (2, 61, 40)


def test_keras_save_load_tf_function_and_export(clips: list[np.ndarray], tmp_path: Path) -> None:
    model = _tiny_model()
    x = np.stack([pad_or_crop(c.astype(np.float32), 6000).numpy() for c in clips[:4]])
    expected = model(x).numpy()

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()

    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_allclose(fn(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fn(x[:1, :5000]).numpy(), model(x[:1, :5000]).numpy(), atol=1e-6)

    model.export(str(tmp_path / "sm"))
    served = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_wav_bytes_serving_graph(fsdd_files: list[Path], tmp_path: Path) -> None:
    """decode -> resample -> pad -> log-mel exports with core ops only and matches eager."""
    layer = LogMelSpectrogram(sample_rate=16000, n_fft=512, hop_length=256)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def featurize(contents: tf.Tensor) -> tf.Tensor:
        audio, rate = decode_wav(contents)
        return layer(pad_or_crop(resample(audio, rate, 16000), 16000)[None])[0]

    module = tf.Module()
    module.featurize = featurize
    tf.saved_model.save(module, str(tmp_path / "sm"))
    served = tf.saved_model.load(str(tmp_path / "sm"))
    wav, _ = read_audio(fsdd_files[1], target_rate=16000)
    expected = layer(pad_or_crop(wav, 16000)[None])[0].numpy()
    got = served.featurize(tf.constant(fsdd_files[1].read_bytes())).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    graph_def = featurize.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph_def.node}
    ops |= {n.op for f in graph_def.library.function for n in f.node_def}
    assert "DecodeWav" in ops and not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


# ---------------------------------------------------------------- input scaling, settings


def test_int16_input_is_scaled_like_soundfile(fsdd_files: list[Path]) -> None:
    pcm, _ = sf.read(fsdd_files[0], dtype="int16")
    as_float, _ = sf.read(fsdd_files[0], dtype="float32")  # soundfile: int16 / 32768
    np.testing.assert_array_equal(pcm.astype(np.float32) / 32768, as_float)
    layer = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS)
    np.testing.assert_array_equal(layer(pcm[None]).numpy(), layer(as_float[None]).numpy())
    ref = librosa.power_to_db(_librosa_mel(as_float.astype(np.float64)), ref=1.0, top_db=80.0)
    np.testing.assert_allclose(layer(pcm[None]).numpy()[0], ref, rtol=0, atol=DB_ATOL)
    model = keras.Model(inp := keras.Input(shape=(len(pcm),), dtype="int16"), layer(inp))
    np.testing.assert_allclose(model(pcm[None]).numpy(), layer(as_float[None]).numpy(), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_other_integer_audio_is_refused(dtype) -> None:
    with pytest.raises(ValueError, match=f"dtype {np.dtype(dtype).name}: pass float audio"):
        LogMelSpectrogram()(np.zeros((1, 8000), dtype))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"fmin": 3500.0, "fmax": 3000.0}, r"fmin \(3500.0 Hz\) must be < fmax \(3000.0 Hz\)"),
        ({"fmin": 2000.0, "fmax": 2000.0}, "must be < fmax"),
        ({"fmax": 4001.0}, "fmax=4001.0 Hz is above sample_rate / 2 = 4000 Hz"),
        ({"fmin": -1.0}, r"fmin must be in \[0, sample_rate / 2 = 4000\) Hz, got -1.0"),
        ({"fmin": 4000.0}, "fmin must be in"),
        ({"hop_length": 0}, "hop_length must be a positive integer, got 0"),
        ({"power": 0.0}, "power must be > 0"),
        ({"top_db": -1.0}, "top_db must be >= 0 or None"),
    ],
)
def test_impossible_settings_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogMelSpectrogram(sample_rate=8000, **kw)
    if set(kw) <= {"fmin", "fmax"}:
        with pytest.raises(ValueError, match=message):
            mel_filterbank(8000, N_FFT, N_MELS, kw.get("fmin", 0.0), kw.get("fmax"))


def test_center_false_needs_n_fft_samples() -> None:
    layer = LogMelSpectrogram(center=False, n_fft=256)
    with pytest.raises(ValueError, match="center=False needs at least n_fft=256 samples, got 200"):
        layer(np.zeros((1, 200), np.float32))
    with pytest.raises(ValueError, match="got 100"):
        layer.compute_output_shape((None, 100))
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least n_fft=256 samples"):
        fn(tf.zeros((1, 200)))
    assert fn(tf.zeros((1, 256))).shape == (1, 1, 40)  # exactly n_fft: one frame, as librosa
    assert librosa.feature.melspectrogram(
        y=np.zeros(256), sr=SR, n_fft=256, n_mels=N_MELS, center=False
    ).shape[1] == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_like_librosa(bad: float) -> None:
    """A NaN sample used to turn the whole clip into NaN (top_db) where librosa raises."""
    y = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    y[100] = bad
    with pytest.raises(librosa.util.exceptions.ParameterError, match="not finite"):
        librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    for layer in (LogMelSpectrogram(SR, N_FFT, HOP, N_MELS), Mfcc(sample_rate=SR),
                  LogMelAndKurtosis(sample_rate=SR)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="input has NaN or inf samples"):
            layer(y[None])
    fn = tf.function(LogMelSpectrogram(log=False),
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="input has NaN or inf samples"):
        fn(y[None])
    assert np.isfinite(fn(np.nan_to_num(y, posinf=0, neginf=0)[None]).numpy()).all()


@pytest.mark.filterwarnings("ignore:n_fft=256 is too large:UserWarning")  # librosa, on purpose
@pytest.mark.parametrize(("pad_mode", "shortest"), [("reflect", 129), ("symmetric", 128),
                                                    ("edge", 1)])
def test_pad_modes_minimum_length(pad_mode: str, shortest: int) -> None:
    """The shortest clip each pad mode mirrors from matches librosa; one sample less is refused
    by name (it used to fail inside MirrorPad, or give 0 frames against num_frames' 1 for edge).
    """
    y = np.random.default_rng(1).normal(0, 0.1, shortest)
    layer = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS, pad_mode=pad_mode, log=False)
    ours = layer(y[None].astype(np.float32)).numpy()[0]
    assert ours.shape == (layer.num_frames(shortest), N_MELS) == (1 + shortest // HOP, N_MELS)
    assert _mel_rel_err(ours, _librosa_mel(y, pad_mode=pad_mode)) < MEL_RTOL
    message = f"pad_mode='{pad_mode}' with n_fft=256 needs {shortest}\\+ samples"
    with pytest.raises(ValueError, match=f"{message}, got {shortest - 1}: pad the audio"):
        layer(np.zeros((1, shortest - 1), np.float32))
    with pytest.raises(ValueError, match=message):
        layer.compute_output_shape((None, shortest - 1))
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    graph_message = f"with n_fft=256 needs {shortest}\\+ samples per example"  # quotes escaped
    with pytest.raises(tf.errors.InvalidArgumentError, match=graph_message):
        fn(tf.zeros((1, shortest - 1)))
    np.testing.assert_allclose(fn(y[None].astype(np.float32)).numpy()[0], ours, rtol=1e-6)


def test_default_top_db_is_librosas_80(clips: list[np.ndarray]) -> None:
    assert LogMelSpectrogram().top_db == Mfcc().top_db == 80.0
    y = np.concatenate([clips[0], np.zeros(4000)])  # silence: floored at peak - 80 dB
    got = LogMelSpectrogram(SR, N_FFT, HOP, N_MELS)(y[None].astype(np.float32)).numpy()[0]
    ref = librosa.power_to_db(_librosa_mel(y))  # librosa's defaults: ref=1, top_db=80
    np.testing.assert_allclose(got, ref, rtol=0, atol=DB_ATOL)
    assert np.isclose(got.min(), got.max() - 80.0, atol=1e-4)


@pytest.mark.parametrize(("signal", "rtol"), [("broadband", MEL_RTOL), ("tone_12k", 2e-3)])
def test_mel_tolerance_for_in_band_and_out_of_band_energy(signal: str, rtol: float) -> None:
    """The documented bounds: 1e-4 for broadband signals, 2e-3 with a strong tone above fmax."""
    sr, n = 44100, 22050
    t = np.arange(n) / sr
    if signal == "broadband":
        y = np.random.default_rng(0).normal(0, 0.1, n)
    else:
        y = 0.5 * np.sin(2 * np.pi * 12000 * t)
    kw = {"sr": sr, "n_fft": 2048, "hop_length": 512, "n_mels": 64, "fmax": 8000.0}
    ref = _librosa_mel(y, **kw)
    layer = LogMelSpectrogram(sr, 2048, 512, 64, fmax=8000.0, log=False)
    err = _mel_rel_err(layer(y[None].astype(np.float32)).numpy()[0], ref)
    assert err <= rtol
    if signal == "tone_12k":
        assert err > MEL_RTOL  # why the out-of-band bound is looser: the case


def _band_kurtosis(y: np.ndarray, sr: int, low: float, high: float) -> float:
    """Reference: scipy's (Pearson) kurtosis of the clip band-passed by zeroing FFT bins."""
    import scipy.stats

    f = np.fft.rfftfreq(len(y), 1 / sr)
    band = np.fft.irfft(np.fft.rfft(y) * ((f >= low) & (f < high)), n=len(y))
    return float(np.log(scipy.stats.kurtosis(band, fisher=False)))


def test_band_kurtosis_matches_scipy_and_tells_impacts_from_noise(
        clips: list[np.ndarray], tmp_path: Path) -> None:
    bands = [[300.0, 1000.0], [1000.0, 4000.0]]
    layer = LogMelAndKurtosis(kurtosis_bands=bands, sample_rate=SR)
    x = np.stack([pad_or_crop(c.astype(np.float32), 6000).numpy() for c in clips[:6]])
    out = layer(x).numpy()
    assert out.shape == (6, layer.num_frames(6000), N_MELS + 2)
    np.testing.assert_array_equal(out[..., :N_MELS], LogMelSpectrogram(sample_rate=SR)(x).numpy())
    assert np.ptp(out[..., N_MELS:], axis=1).max() == 0  # one value per clip, on every frame
    want = [[_band_kurtosis(c, SR, *b) for b in bands] for c in x.astype(np.float64)]
    np.testing.assert_allclose(out[:, 0, N_MELS:], want, atol=1e-4)

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, 8000)
    impacts = noise * 0.1  # a 2.5 kHz resonance rung every 10 ms, decaying in 1 ms
    t = np.arange(80) / SR
    for start in range(0, 8000 - 80, 80):
        impacts[start:start + 80] += np.sin(2 * np.pi * 2500 * t) * np.exp(-t / 1e-3)
    k = layer(np.stack([noise, impacts, np.zeros(8000)]).astype(np.float32)).numpy()[:, 0, N_MELS:]
    assert abs(k[0, 1] - np.log(3)) < 0.1 and k[1, 1] > np.log(3) + 1.0
    np.testing.assert_array_equal(k[2], [0.0, 0.0])  # silence: no band, kurtosis 1
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(layer(pcm).numpy(), layer(pcm / 32768.0).numpy(), atol=1e-4)

    model = keras.Sequential([keras.Input((6000,)), layer])
    model.save(tmp_path / "k.keras")
    loaded = keras.saving.load_model(tmp_path / "k.keras")
    assert loaded.layers[0].get_config() == layer.get_config()
    np.testing.assert_allclose(loaded(x).numpy(), out, atol=1e-6)
    for bad in ([], [[1000.0, 5000.0]], [[2000.0, 1000.0]], [[100.0]], [[100, "x"]], 3, "1-4k"):
        with pytest.raises(ValueError, match="kurtosis_bands must be a non-empty list"):
            LogMelAndKurtosis(kurtosis_bands=bad, sample_rate=SR)
