import numpy as np
import pytest

from mmkeras.data.impute import ABSENT, PRESENT, impute, presence
from mmkeras.data.standardize import RunningStats, fit_stats

NAN = np.nan
# Two channels; channel 1 is also missing at step 0 and 4 via NaN.
X = np.array(
    [
        [NAN, NAN],
        [1.0, 10.0],
        [NAN, 20.0],
        [NAN, 30.0],
        [4.0, NAN],
        [5.0, 50.0],
        [NAN, NAN],
    ]
)
TRAIN_MEAN = np.array([100.0, 200.0])


def test_mean_uses_training_mean_not_the_filled_datas():
    filled, observed = impute(X, strategy="mean", fill_value=TRAIN_MEAN)
    expected = np.where(np.isnan(X), TRAIN_MEAN, X)
    np.testing.assert_array_equal(filled, expected)
    np.testing.assert_array_equal(observed, ~np.isnan(X))
    assert not np.allclose(filled[0], np.nanmean(X, axis=0))


def test_mean_from_standardizer_or_running_stats():
    train = np.array([[0.0, 100.0], [2.0, 300.0]])  # mean [1, 200]
    stats = RunningStats(reservoir_size=0)
    stats.update(train)
    for source in (fit_stats(train, "zscore"), stats):
        filled, _ = impute(X, strategy="mean", fill_value=source)
        np.testing.assert_array_equal(filled[0], [1.0, 200.0])
    with pytest.raises(ValueError, match="not the mean"):
        impute(X, strategy="mean", fill_value=fit_stats(train, "minmax"))
    with pytest.raises(ValueError, match="training mean"):
        impute(X, strategy="mean")


def test_ffill_leading_gets_training_mean_or_zero():
    filled, _ = impute(X, strategy="ffill", fill_value=TRAIN_MEAN)
    expected = np.array(
        [
            [100.0, 200.0],
            [1.0, 10.0],
            [1.0, 20.0],
            [1.0, 30.0],
            [4.0, 30.0],
            [5.0, 50.0],
            [5.0, 50.0],
        ]
    )
    np.testing.assert_array_equal(filled, expected)
    filled, _ = impute(X, strategy="ffill")
    np.testing.assert_array_equal(filled[0], [0.0, 0.0])
    np.testing.assert_array_equal(filled[1:], expected[1:])


def test_linear_interpolates_interior_and_holds_ends():
    filled, _ = impute(X, strategy="linear", fill_value=TRAIN_MEAN)
    expected = np.array(
        [
            [1.0, 10.0],
            [1.0, 10.0],
            [2.0, 20.0],
            [3.0, 30.0],
            [4.0, 40.0],
            [5.0, 50.0],
            [5.0, 50.0],
        ]
    )
    np.testing.assert_array_equal(filled, expected)


def test_linear_uneven_gap_and_empty_channel():
    x = np.array([[0.0, NAN], [NAN, NAN], [NAN, NAN], [NAN, NAN], [8.0, NAN]])
    filled, observed = impute(x, strategy="linear", fill_value=[0.0, 7.0])
    np.testing.assert_array_equal(filled[:, 0], [0.0, 2.0, 4.0, 6.0, 8.0])
    np.testing.assert_array_equal(filled[:, 1], 7.0)
    assert not observed[:, 1].any()
    filled, _ = impute(x, strategy="linear")
    np.testing.assert_array_equal(filled[:, 1], 0.0)


def test_zero():
    filled, _ = impute(X, strategy="zero", fill_value=TRAIN_MEAN)
    np.testing.assert_array_equal(filled, np.nan_to_num(X, nan=0.0))


def test_step_mask_combines_with_nan():
    x = np.array([[1.0, 1.0], [2.0, NAN], [3.0, 3.0], [4.0, 4.0]])
    mask = np.array([True, False, True, True])  # step 1 dropped (e.g. a glitch)
    filled, observed = impute(x, mask, strategy="linear")
    np.testing.assert_array_equal(filled, [[1, 1], [2, 2], [3, 3], [4, 4]])
    np.testing.assert_array_equal(observed, [[1, 1], [0, 0], [1, 1], [1, 1]])
    filled, _ = impute(x, mask, strategy="mean", fill_value=0.0)
    np.testing.assert_array_equal(filled[1], [0.0, 0.0])
    elementwise = np.ones((4, 2), bool)
    elementwise[2, 0] = False
    filled, observed = impute(x, elementwise, strategy="ffill")
    np.testing.assert_array_equal(filled[:, 0], [1.0, 2.0, 2.0, 4.0])
    np.testing.assert_array_equal(filled[:, 1], [1.0, 1.0, 3.0, 4.0])


def test_input_not_modified_and_validation():
    x = X.copy()
    impute(x, strategy="linear")
    np.testing.assert_array_equal(np.isnan(x), np.isnan(X))
    with pytest.raises(ValueError, match=r"\[T, C\]"):
        impute(np.zeros(3), strategy="zero")
    with pytest.raises(ValueError, match="mask"):
        impute(X, np.ones(3, bool), strategy="zero")
    with pytest.raises(ValueError, match="strategy"):
        impute(X, strategy="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        impute(X, strategy="mean", fill_value=[NAN, 0.0])


def test_vectorised_on_long_stream():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200_000, 8))
    x[rng.random(x.shape) < 0.3] = NAN
    filled, observed = impute(x, strategy="linear")
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[observed], x[observed])
    # Matches np.interp per channel (which holds the ends the same way).
    t = np.arange(len(x))
    for c in range(x.shape[1]):
        ok = observed[:, c]
        np.testing.assert_allclose(filled[:, c], np.interp(t, t[ok], x[ok, c]), atol=1e-14)


def test_presence_convention():
    values, present = presence(None, (4, 2))
    assert values.shape == (4, 2) and values.dtype == np.float32
    assert not values.any() and present.tolist() == [ABSENT]
    values, present = presence(np.full((4, 2), NAN), (4, 2))
    assert not values.any() and present.tolist() == [ABSENT]
    partly = np.array([[1.0, NAN]])
    values, present = presence(partly, (1, 2))
    assert present.tolist() == [PRESENT] and np.isnan(values[0, 1])
    with pytest.raises(ValueError, match="shape"):
        presence(np.ones((3, 2)), (4, 2))
