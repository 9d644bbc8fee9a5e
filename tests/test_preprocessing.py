"""Standardisation statistics come from the training split only and live inside the model."""

import re

import keras
import numpy as np
import pytest

from mmkeras.data.preprocessing import fit_preprocessing, fixed_transform, preprocessing_layers

PUNCTUATION = r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~']"


@pytest.fixture(scope="module")
def state(tiny_machine):
    return fit_preprocessing(tiny_machine)


def _mean_var(state, name):
    d = state[name]["standardizer"]
    return np.asarray(d["center"]), np.asarray(d["scale"]) ** 2


def _features(spec, array):
    """The training data as the standardisation layer sees it (after any fixed transform)."""
    transform = fixed_transform(spec)
    if transform is None:
        return array.astype(np.float64)
    return np.concatenate([keras.ops.convert_to_numpy(transform(array[i:i + 64]))
                           for i in range(0, len(array), 64)]).astype(np.float64)


@pytest.mark.parametrize("name", ["vibration", "audio", "environment"])
def test_stats_equal_numpy_on_train_only(tiny_machine, state, name):
    spec = tiny_machine.modalities[name]
    train = _features(spec, tiny_machine.splits["train"][name])
    axes = tuple(range(train.ndim - 1))  # per channel / mel band / spectral bin
    mean, var = _mean_var(state, name)
    assert mean.shape == (train.shape[-1],)
    np.testing.assert_allclose(mean, train.mean(axis=axes), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, train.var(axis=axes), rtol=1e-5, atol=1e-9)
    test = _features(spec, tiny_machine.splits["test"][name])
    assert not np.allclose(mean, np.concatenate([train, test]).mean(axis=axes), rtol=1e-4, atol=0)
    *_, scale = preprocessing_layers(spec, state[name])  # the layer inside the model
    standardised = keras.ops.convert_to_numpy(scale(train[:64].astype(np.float32)))
    np.testing.assert_allclose(standardised, (train[:64] - mean) / np.sqrt(var), atol=1e-4)


def _words(notes) -> set[str]:
    """TextVectorization's default standardisation: lower case, strip ASCII punctuation."""
    return {w for note in notes for w in re.sub(PUNCTUATION, "", str(note).lower()).split()}


def test_text_vocabulary_from_train_only(tiny_machine, state):
    vocabulary = set(state["notes"]["vocabulary"])
    assert vocabulary == _words(tiny_machine.splits["train"]["notes"])
