"""Standardisation statistics come from the training split only and live inside the model."""

import re

import keras
import numpy as np
import pytest

from mmkeras.data.preprocessing import fit_preprocessing, preprocessing_layers

PUNCTUATION = r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']"


@pytest.fixture(scope="module")
def state(tiny_machine):
    return fit_preprocessing(tiny_machine)


def _mean_var(state, name):
    d = state[name]["standardizer"]
    return np.asarray(d["center"]), np.asarray(d["scale"]) ** 2


@pytest.mark.parametrize("name", ["vibration", "environment"])
def test_timeseries_stats_equal_numpy_on_train(tiny_machine, state, name):
    train = tiny_machine.splits["train"][name].astype(np.float64)
    mean, var = _mean_var(state, name)
    np.testing.assert_allclose(mean, train.mean(axis=(0, 1)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var, train.var(axis=(0, 1)), rtol=1e-9)
    everything = np.concatenate([tiny_machine.splits[s][name] for s in ("train", "val", "test")])
    assert not np.allclose(mean, everything.mean(axis=(0, 1)), rtol=1e-6, atol=0)


def test_audio_stats_per_mel_band_on_train(tiny_machine, state):
    spec = tiny_machine.modalities["audio"]
    logmel, scale = preprocessing_layers(spec, state["audio"])
    train = tiny_machine.splits["train"]["audio"]
    mel = np.concatenate([keras.ops.convert_to_numpy(logmel(train[i:i + 64]))
                          for i in range(0, len(train), 64)]).astype(np.float64)
    mean, var = _mean_var(state, "audio")
    assert mean.shape == (spec.options.get("n_mels", 40),)
    np.testing.assert_allclose(mean, mel.mean(axis=(0, 1)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, mel.var(axis=(0, 1)), rtol=1e-5)
    standardised = keras.ops.convert_to_numpy(scale(mel[:64].astype(np.float32)))
    np.testing.assert_allclose(standardised, (mel[:64] - mean) / np.sqrt(var), atol=1e-4)


def _words(notes) -> set[str]:
    """TextVectorization's default standardisation: lower case, strip ASCII punctuation."""
    return {w for note in notes for w in re.sub(PUNCTUATION, "", str(note).lower()).split()}


def test_text_vocabulary_from_train_only(tiny_machine, state):
    vocabulary = set(state["notes"]["vocabulary"])
    assert vocabulary == _words(tiny_machine.splits["train"]["notes"])
