"""ModalityDropout: clears presence bits while training only, never all, at the given rate."""

import keras
import numpy as np
import pytest

from mmkeras.fusion.modality_dropout import ModalityDropout
from tests.layer_harness import run_layer_test


def presence_matrix(n: int = 3000) -> np.ndarray:
    """All present, plus rows with one or two modalities absent and rows with none present."""
    rng = np.random.default_rng(0)
    presence = np.ones((n, 3), "float32")
    presence[: n // 2] = rng.integers(0, 2, size=(n // 2, 3))
    return presence


def dropped(rate: float, presence: np.ndarray, training) -> np.ndarray:
    return keras.ops.convert_to_numpy(ModalityDropout(rate, seed=1)(presence, training=training))


def test_identity_at_inference():
    presence = presence_matrix()
    for training in (False, None):
        np.testing.assert_array_equal(dropped(0.6, presence, training), presence)


def test_never_all_and_absent_stays_absent():
    presence = presence_matrix()
    kept = dropped(0.8, presence, True)
    assert set(np.unique(kept)) == {0.0, 1.0}
    assert np.all(kept <= presence), "an absent modality came back"
    has_any = presence.sum(axis=1) > 0
    assert kept[has_any].sum(axis=1).min() == 1, "an example lost every present modality"
    np.testing.assert_array_equal(kept[~has_any], 0.0)


def test_drops_at_the_rate():
    presence = np.ones((4000, 3), "float32")
    kept = dropped(0.3, presence, True)
    # each bit goes with p = 0.3; when all 3 would go (p = 0.027) one is kept back
    assert abs((1 - kept.mean()) - (0.3 - 0.027 / 3)) < 0.015
    np.testing.assert_array_equal(dropped(0.0, presence, True), presence)


def test_rate_is_checked():
    with pytest.raises(ValueError, match="rate must be in"):
        ModalityDropout(1.0)


def test_layer_harness():
    run_layer_test((ModalityDropout, {"rate": 0.4, "seed": 3}), [presence_matrix(16)],
                   expected_shapes=(None, 3))
