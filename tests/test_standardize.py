import functools
import itertools
import json

import keras
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmkeras.data.standardize import Rescale, RunningStats, Standardizer, fit_stats


def _split_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = rng.normal([1.0, -3.0, 50.0], [2.0, 0.5, 10.0], size=(600, 3))
    test = rng.normal([9.0, 4.0, -20.0], [5.0, 3.0, 1.0], size=(400, 3))
    return train, test


def _batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def test_zscore_fitted_on_train_only_matches_numpy():
    train, test = _split_data()
    std = fit_stats(_batches(train, 64), "zscore")
    np.testing.assert_allclose(std.center, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.scale, train.std(axis=0), rtol=1e-12)
    whole = np.concatenate([train, test])
    assert not np.allclose(std.center, whole.mean(axis=0))
    assert not np.allclose(std.scale, whole.std(axis=0))


def test_minmax_fitted_on_train_only_matches_numpy():
    train, test = _split_data()
    std = fit_stats(_batches(train, 100), "minmax")
    np.testing.assert_array_equal(std.center, train.min(axis=0))
    np.testing.assert_allclose(std.scale, train.max(axis=0) - train.min(axis=0), rtol=1e-15)
    whole = np.concatenate([train, test])
    assert not np.allclose(std.center, whole.min(axis=0))
    np.testing.assert_allclose(std.transform(train).min(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(std.transform(train).max(axis=0), 1.0, rtol=1e-15)


def test_robust_is_exact_within_reservoir():
    train, test = _split_data()
    std = fit_stats(_batches(train, 37), "robust", reservoir_size=1000)
    q25, q50, q75 = np.percentile(train, [25, 50, 75], axis=0)
    np.testing.assert_allclose(std.center, q50, rtol=1e-15)
    np.testing.assert_allclose(std.scale, q75 - q25, rtol=1e-12)
    assert not np.allclose(std.center, np.median(np.concatenate([train, test]), axis=0))


def test_robust_beyond_reservoir_within_documented_error():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=(100_000, 2))
    k = 2048
    std = fit_stats(_batches(x, 5000), "robust", reservoir_size=k)
    # Within 4 sigma of the documented rank error sqrt(q(1-q)/k), in quantile units.
    rank_of_median = (x < std.center).mean(axis=0)
    assert np.all(np.abs(rank_of_median - 0.5) < 4 * np.sqrt(0.25 / k))
    true_iqr = np.subtract(*np.percentile(x, [75, 25], axis=0))
    np.testing.assert_allclose(std.scale, true_iqr, rtol=0.1)


def test_leading_axes_reduced_images_per_channel_and_logmel_per_band():
    rng = np.random.default_rng(2)
    images = rng.random((6, 5, 4, 3)) * [1.0, 2.0, 3.0]
    std = fit_stats(_batches(images, 2))
    np.testing.assert_allclose(std.center, images.reshape(-1, 3).mean(axis=0), rtol=1e-12)
    logmel = rng.normal(size=(50, 16))  # [frames, mels] of one clip
    std = fit_stats(logmel, "minmax")
    np.testing.assert_array_equal(std.center, logmel.min(axis=0))
    assert std.n_features == 16


def test_nan_ignored_per_feature_with_per_feature_counts():
    x = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, 4.0], [5.0, 8.0]])
    s = RunningStats()
    s.update(x[:2])
    s.update(x[2:])
    assert s.count.tolist() == [3, 2]
    np.testing.assert_allclose(s.mean, np.nanmean(x, axis=0))
    np.testing.assert_allclose(s.variance, np.nanvar(x, axis=0))
    np.testing.assert_allclose(s.min, np.nanmin(x, axis=0))
    np.testing.assert_allclose(s.max, np.nanmax(x, axis=0))
    np.testing.assert_allclose(s.quantile(0.5), np.nanmedian(x, axis=0))


def test_errors():
    s = RunningStats()
    with pytest.raises(ValueError, match="no data"):
        _ = s.mean
    with pytest.raises(ValueError, match="inf"):
        s.update(np.array([[np.inf]]))
    s.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected 3 features"):
        s.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reservoir_size"):
        RunningStats(reservoir_size=0).quantile(0.5)
    with pytest.raises(ValueError, match="without values"):
        fit_stats([np.array([[1.0, np.nan]])])
    with pytest.raises(ValueError, match="method"):
        fit_stats([np.zeros((2, 1))], "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batches"):
        fit_stats([])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    n_features=st.integers(1, 3),
    cuts=st.lists(st.floats(0, 1), max_size=8),
    offset=st.sampled_from([0.0, -5e3, 1e9]),
    seed=st.integers(0, 2**32 - 1),
    nan_frac=st.sampled_from([0.0, 0.2]),
)
def test_merge_of_partial_stats_equals_one_pass(n, n_features, cuts, offset, seed, nan_frac):
    rng = np.random.default_rng(seed)
    x = offset + rng.normal(size=(n, n_features)) * rng.uniform(0.01, 2.0, n_features)
    x[rng.random(x.shape) < nan_frac] = np.nan
    x[0] = offset  # every feature has at least one value
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = RunningStats(reservoir_size=n, seed=(seed, i))
        part.update(x[a:b])
        parts.append(part)
    merged = functools.reduce(RunningStats.merge, parts[::-1])  # arbitrary merge order
    one = RunningStats(reservoir_size=n)
    one.update(x)

    np.testing.assert_array_equal(merged.count, (~np.isnan(x)).sum(axis=0))
    var = np.nanvar(x, axis=0)
    # Float64 input at the offset is only known to ~ulp(offset); the variance error of a
    # stable algorithm is ~ 2 * std * (mean error), i.e. a few ulp(offset) times std.
    var_tol = 1e-10 * var + 32 * np.spacing(abs(offset)) * np.sqrt(var) + 1e-14
    for s in (merged, one):
        np.testing.assert_allclose(s.mean, np.nanmean(x, axis=0), rtol=1e-13, atol=1e-12)
        assert np.all(np.abs(s.variance - var) <= var_tol)
        np.testing.assert_array_equal(s.min, np.nanmin(x, axis=0))
        np.testing.assert_array_equal(s.max, np.nanmax(x, axis=0))
        np.testing.assert_allclose(s.quantile(0.5), np.nanmedian(x, axis=0), rtol=1e-14, atol=1e-14)


def test_large_offset_is_stable_where_naive_sum_of_squares_fails():
    rng = np.random.default_rng(3)
    x = 1e9 + rng.normal(size=(20_000, 1)) * 1e-2
    s = RunningStats(reservoir_size=0)
    for batch in _batches(x, 1000):
        s.update(batch)
    naive = (x**2).mean(axis=0) - x.mean(axis=0) ** 2
    true_var = x.var(axis=0)
    np.testing.assert_allclose(s.variance, true_var, rtol=1e-6)
    assert np.all(np.abs(naive - true_var) > 100 * true_var)


def test_merge_with_empty_and_mismatch():
    a, b = RunningStats(), RunningStats()
    a.update(np.arange(6.0).reshape(3, 2))
    for m in (a.merge(b), b.merge(a)):
        np.testing.assert_array_equal(m.mean, a.mean)
        np.testing.assert_array_equal(m.quantile(0.5), [2.0, 3.0])
    c = RunningStats()
    c.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="feature mismatch"):
        a.merge(c)
    before = a.count
    a.merge(a)
    np.testing.assert_array_equal(a.count, before)  # merge does not mutate


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_zero_variance_feature_gets_unit_scale(method):
    x = np.column_stack([np.full(10, 1e9 + 0.1), np.arange(10.0), np.zeros(10)])
    std = fit_stats(_batches(x, 3), method)
    assert std.scale[0] == 1.0 and std.scale[2] == 1.0
    out = std.transform(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, [0, 2]], 0.0)
    layer_out = np.asarray(std.to_layer()(x.astype("float32")))
    assert np.isfinite(layer_out).all()


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_layer_matches_numpy_and_survives_keras_round_trip(method, tmp_path):
    train, test = _split_data()
    std = fit_stats(_batches(train, 128), method)
    layer = std.to_layer(name="std")
    expected_type = keras.layers.Normalization if method == "zscore" else Rescale
    assert isinstance(layer, expected_type) and layer.name == "std"

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    np.testing.assert_allclose(
        np.asarray(model.get_layer("std")(test.astype("float32"))),
        std.transform(test),
        rtol=1e-5,
        atol=1e-5,
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        np.asarray(loaded.get_layer("std")(test.astype("float32"))),
        std.transform(test),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(loaded.predict(test, verbose=0), model.predict(test, verbose=0))


@pytest.mark.parametrize("method", ["zscore", "robust"])
def test_layer_broadcasts_over_image_axes_and_takes_raw_uint8(method):
    images = np.random.default_rng(4).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    std = fit_stats(images, method)
    np.testing.assert_allclose(
        np.asarray(std.to_layer()(images)), std.transform(images), rtol=1e-5, atol=1e-5
    )


def test_dict_json_round_trip_and_validation():
    std = fit_stats(_batches(_split_data()[0], 50), "robust")
    again = Standardizer.from_dict(json.loads(json.dumps(std.to_dict())))
    assert again == std and again.method == "robust"
    assert again.center.dtype == np.float64
    assert not again.center.flags.writeable
    with pytest.raises(ValueError, match="scale"):
        Standardizer("zscore", np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="method"):
        Standardizer("l2", np.zeros(1), np.ones(1))


def test_one_d_input_to_fit_stats_is_refused_with_the_reshape_hint():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match=r"batch 0 has shape \(10,\).*reshape to \[N, 1\]"):
        fit_stats(x)
    with pytest.raises(ValueError, match=r"batch 1 has shape \(3,\)"):
        fit_stats([x[:, None], x[:3]])
    one = fit_stats(x[:, None])  # the hint works: one feature, pandas-equal statistics
    np.testing.assert_allclose(one.center, [pd.Series(x).mean()], rtol=1e-15)
    np.testing.assert_allclose(one.scale, [pd.Series(x).std(ddof=0)], rtol=1e-15)


@pytest.mark.parametrize("method", ["zscore", "minmax", "robust"])
def test_wrong_channel_count_names_expected_and_got(method):
    std = fit_stats(np.random.default_rng(0).normal(size=(50, 3)), method)
    with pytest.raises(ValueError, match=r"expected 3 features on the last axis .*got 4"):
        std.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="got a scalar"):
        std.transform(1.0)
    if method != "zscore":  # Rescale checks when built; Normalization has its own message
        with pytest.raises(ValueError, match=r"expected 3 features .*got 5"):
            std.to_layer()(np.zeros((2, 5), np.float32))
