"""Tests for mmkeras.data.align (pandas / numpy are the references)."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmkeras.data.align import Aligned, align, align_streams, fixed_rate_grid

NAT = np.iinfo(np.int64).min  # NaT as int64 (pandas / numpy)
BIG_NS = 1_700_000_000_000_000_000  # realistic epoch ns: float64 cannot hold these exactly
FAST = settings(max_examples=200, deadline=None)
DIRECTION = {"nearest": "nearest", "previous": "backward"}  # align method -> merge_asof


# ---------------------------------------------------------------- reference implementations


def _clean(t, x, offset, policy):
    """Drop non-finite rows, add offset, stable-sort, dedupe with ``policy`` (pandas)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    keep = np.isfinite(x).all(axis=1) & np.isfinite(t)
    cols = [f"v{c}" for c in range(x.shape[1])]
    df = pd.DataFrame(x[keep], columns=cols)
    df.insert(0, "t", t[keep] + offset)
    df = df.sort_values("t", kind="stable")
    if policy == "mean":
        df = df.groupby("t", sort=True, as_index=False).mean()
    else:
        df = df.drop_duplicates("t", keep=policy)
    return df.reset_index(drop=True), cols


def _merge_asof(right, cols, ref, direction, tolerance):
    """pandas.merge_asof of ``right`` onto the (unsorted) ``ref``, returned in ``ref`` order."""
    left = pd.DataFrame({"t": ref, "row": np.arange(ref.size)}).sort_values("t", kind="stable")
    merged = pd.merge_asof(
        left, right, on="t", direction=direction, tolerance=tolerance, allow_exact_matches=True
    ).sort_values("row")
    values = merged[cols].to_numpy(np.float64)
    return values, ~np.isnan(values).any(axis=1)


def _assert_same(got: Aligned, values, mask):
    assert got.values.dtype == np.float64 and got.mask.dtype == bool
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.values, values)  # NaN == NaN here, bit-exact otherwise
    assert np.isnan(got.values[~got.mask]).all()


# ---------------------------------------------------------------- hypothesis strategies


@st.composite
def streams(draw):
    """Random unsorted, duplicated, gappy stream + unsorted reference, int64 ns or float s."""
    integer = draw(st.booleans())
    n = draw(st.integers(0, 40))
    m = draw(st.integers(0, 30))
    if integer:
        base = draw(st.sampled_from([0, -5_000, BIG_NS]))
        scale = draw(st.sampled_from([1, 1_000, 1_000_000]))
        ticks = st.integers(0, 300)
        t = base + scale * np.array(draw(st.lists(ticks, min_size=n, max_size=n)), np.int64)
        ref = base + scale * np.array(
            draw(st.lists(st.integers(-30, 330), min_size=m, max_size=m)), np.int64
        )
        tol = draw(st.none() | st.integers(0, 40).map(lambda k: k * scale))
        offset = draw(st.sampled_from([0, 0, 7, -13])) * scale
    else:
        # quarter-second ticks give exact ties and duplicates; arbitrary floats the rest
        stamp = st.integers(-40, 340).map(lambda k: k / 4) | st.floats(-10, 85, width=64)
        t = np.array(draw(st.lists(stamp, min_size=n, max_size=n)), np.float64)
        ref = np.array(draw(st.lists(stamp, min_size=m, max_size=m)), np.float64)
        tol = draw(st.none() | st.sampled_from([0.0, 0.25, 1.0, 3.3, 10.0]))
        offset = draw(st.sampled_from([0.0, 0.0, 1.25, -0.7]))
    policy = draw(st.sampled_from(["mean", "first", "last"]))
    channels = draw(st.integers(1, 3))
    # dyadic values keep duplicate means exact, so pandas' (Kahan) groupby mean is bit-equal
    vals = st.integers(-4000, 4000).map(lambda k: k / 4)
    x = np.array(draw(st.lists(vals, min_size=n * channels, max_size=n * channels)), np.float64)
    x = x.reshape(n, channels)
    for row in draw(st.lists(st.integers(0, n - 1), max_size=3)) if n else ():
        x[row, draw(st.integers(0, channels - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    if channels == 1 and draw(st.booleans()):
        x = x[:, 0]
    return t, x, ref, tol, offset, policy


# ---------------------------------------------------------------- property tests


@FAST
@given(streams(), st.sampled_from(["nearest", "previous"]))
def test_asof_methods_equal_pandas_merge_asof(case, method):
    t, x, ref, tol, offset, policy = case
    got = align(t, x, ref, method, tolerance=tol, offset=offset, duplicates=policy)
    right, cols = _clean(t, x, offset, policy)
    values, mask = _merge_asof(right, cols, ref, DIRECTION[method], tol)
    _assert_same(got, values, mask)


@FAST
@given(streams())
def test_linear_equals_numpy_interp_inside_and_missing_outside(case):
    t, x, ref, tol, offset, policy = case
    got = align(t, x, ref, "linear", tolerance=tol, offset=offset, duplicates=policy)
    right, cols = _clean(t, x, offset, policy)
    ts = right["t"].to_numpy()
    expected = np.full((ref.size, len(cols)), np.nan)
    inside = np.zeros(ref.size, bool)
    if ts.size:
        inside = (ref >= ts[0]) & (ref <= ts[-1])
        if tol is not None:  # bracketing samples from pandas: bridged gap must be <= tol
            pos = right[["t"]].assign(pos=np.arange(ts.size))  # positions keep int64 ns exact
            lo = _merge_asof(pos, ["pos"], ref, "backward", None)[0][inside, 0].astype(int)
            hi = _merge_asof(pos, ["pos"], ref, "forward", None)[0][inside, 0].astype(int)
            inside[inside] = (ts[lo] == ref[inside]) | (ts[hi] - ts[lo] <= tol)
        base = ts[0] if ts.dtype.kind == "i" else 0  # int64 ns: rebase exactly, then float64
        xp = (ts - base).astype(np.float64)
        for c, col in enumerate(cols):
            expected[inside, c] = np.interp(
                (ref[inside] - base).astype(np.float64), xp, right[col].to_numpy()
            )
    _assert_same(got, expected, inside)


@FAST
@given(streams(), st.sampled_from(["mean", "min", "max", "last", "std", "count"]))
def test_window_methods_match_pandas_groupby(case, method):
    t, x, ref, _, offset, policy = case
    ref = np.unique(ref)
    assume(ref.size >= 2)
    got = align(t, x, ref, method, offset=offset, duplicates=policy)
    right, cols = _clean(t, x, offset, policy)
    step = np.sort(np.diff(ref))[(ref.size - 2) // 2]
    edges = np.append(ref, ref[-1] + step)
    # bin = last edge <= t (exact for int64 ns via merge_asof); the closing edge is no bin
    bins = pd.DataFrame({"t": edges, "bin": np.arange(edges.size)})
    right = pd.merge_asof(right, bins, on="t", direction="backward")
    groups = right[right["bin"] < ref.size].groupby("bin")[cols]
    how = {"std": lambda g: g.std(ddof=0), "count": lambda g: g.count()}
    table = how.get(method, lambda g: g.agg(method))(groups).reindex(range(ref.size))
    if method == "count":
        table = table.fillna(0)
    np.testing.assert_array_equal(got.mask, ~table.isna().any(axis=1).to_numpy())
    np.testing.assert_allclose(got.values, table.to_numpy(np.float64), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("method", ["nearest", "previous"])
def test_long_sorted_reference_equals_pandas(method):
    """Streams longer than the 4096-key search block take the blockwise searchsorted path."""
    rng = np.random.default_rng(7)
    t = BIG_NS + rng.integers(0, 10**9, 30_000) // 1000 * 1000  # unsorted, with duplicates
    x = rng.normal(size=(t.size, 2))
    ref = np.sort(BIG_NS + rng.integers(-10**7, 10**9 + 10**7, 25_000))
    ref[4000:4200] = t[:3] = ref[4000]  # equal steps across a block edge, hitting samples
    got = align(t, x, ref, method, tolerance=40_000, duplicates="last")
    right, cols = _clean(t, x, 0, "last")
    _assert_same(got, *_merge_asof(right, cols, ref, DIRECTION[method], 40_000))
    count = align(t, x, ref, "count").values[:, 0]
    assert count.sum() == np.unique(t[t >= ref[0]]).size  # each distinct stamp in one interval


# ---------------------------------------------------------------- unit tests: point methods


def test_nearest_ties_go_to_earlier_sample_and_tolerance_is_inclusive():
    t = np.array([0, 10], np.int64)
    got = align(t, [1.0, 2.0], np.array([5, 6, -5, 15, 16], np.int64), tolerance=5)
    np.testing.assert_array_equal(got.values[:, 0], [1.0, 2.0, 1.0, 2.0, np.nan])
    np.testing.assert_array_equal(got.mask, [True, True, True, True, False])


def test_int64_ns_stays_exact_at_epoch_scale():
    t = BIG_NS + np.array([0, 2], np.int64)  # 1 ns apart from the reference: float64 can't tell
    got = align(t, [1.0, 2.0], np.array([BIG_NS + 1, BIG_NS + 3], np.int64), "nearest", 0)
    assert not got.mask.any()
    got = align(t, [1.0, 2.0], np.array([BIG_NS + 1], np.int64), "linear")
    np.testing.assert_array_equal(got.values, [[1.5]])


def test_previous_and_linear_tolerance():
    t = np.array([0.0, 1.0, 5.0])
    x = np.array([0.0, 10.0, 50.0])
    ref = np.array([-1.0, 0.5, 1.0, 3.0, 5.0, 6.0])
    prev = align(t, x, ref, "previous", tolerance=1.0)
    np.testing.assert_array_equal(prev.values[:, 0], [np.nan, 0, 10, np.nan, 50, 50])
    lin = align(t, x, ref, "linear", tolerance=2.0)  # 1 -> 5 gap (4 s) is not bridged
    np.testing.assert_array_equal(lin.values[:, 0], [np.nan, 5, 10, np.nan, 50, np.nan])
    np.testing.assert_array_equal(lin.mask, [False, True, True, False, True, False])


def test_offset_sign_corrects_a_clock_running_ahead():
    t = np.arange(0, 100, 10, dtype=np.int64)
    x = np.arange(10.0)
    ahead = t + 3  # the same samples stamped by a clock running 3 ns ahead
    for method in ["nearest", "previous", "linear", "mean"]:
        ref = np.arange(0, 100, 5, dtype=np.int64)
        expected = align(t, x, ref, method)
        _assert_same(align(ahead, x, ref, method, offset=-3), *expected)
    got = align(np.array([0.0]), [7.0], np.array([2.5]), "previous", offset=2.5, tolerance=0)
    np.testing.assert_array_equal(got.values, [[7.0]])


def test_unsorted_input_and_duplicate_policies():
    t = np.array([3, 1, 3, 2], np.int64)
    x = np.array([[30.0], [10.0], [31.0], [20.0]])
    ref = np.array([1, 2, 3], np.int64)
    for policy, last in [("mean", 30.5), ("first", 30.0), ("last", 31.0)]:
        got = align(t, x, ref, "nearest", duplicates=policy)
        np.testing.assert_array_equal(got.values[:, 0], [10.0, 20.0, last])


def test_duplicates_error_names_timestamp_and_count():
    t = np.array([5, 1, 5, 7, 7, 5], np.int64)
    with pytest.raises(ValueError, match=r"duplicate timestamp 5 occurs 3 times; 2 timestamps"):
        align(t, np.ones(6), np.array([1], np.int64), duplicates="error")


def test_nan_and_inf_rows_are_dropped_not_propagated():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    x = np.array([[0.0, 0.0], [np.nan, 1.0], [2.0, np.inf], [3.0, 3.0]])
    ref = np.array([1.0, 2.0])
    np.testing.assert_array_equal(align(t, x, ref, "previous").values, [[0, 0], [0, 0]])
    np.testing.assert_array_equal(align(t, x, ref, "linear").values, [[1, 1], [2, 2]])
    counts = align(t, x, np.array([0.0, 2.0]), "count").values  # [0, 2) and [2, 4)
    np.testing.assert_array_equal(counts, [[1, 1], [1, 1]])
    nan_time = align(np.array([0.0, np.nan]), [1.0, 2.0], np.array([0.0, 1.0]), "previous")
    np.testing.assert_array_equal(nan_time.values[:, 0], [1.0, 1.0])


@pytest.mark.parametrize("method", ["nearest", "previous", "linear", "mean", "std", "count"])
def test_empty_and_all_missing_streams(method):
    ref = np.array([0, 10, 20], np.int64)
    for t, x in [(np.array([], np.int64), np.zeros((0, 2))), ([], np.zeros((0, 2))),
                 (np.array([1, 2], np.int64), np.full((2, 2), np.nan))]:
        got = align(t, x, ref, method)
        assert got.values.shape == (3, 2) and got.mask.shape == (3,)
        if method == "count":
            np.testing.assert_array_equal(got.values, np.zeros((3, 2)))
            assert got.mask.all()
        else:
            assert not got.mask.any() and np.isnan(got.values).all()
    empty_ref = align(np.array([1], np.int64), np.ones((1, 4)), [], method)
    assert empty_ref.values.shape == (0, 4) and empty_ref.mask.shape == (0,)


# ---------------------------------------------------------------- unit tests: windows


def test_window_aggregations_hand_computed():
    # intervals [0,10) [10,20) [20,30) [30,40): the last one is [30, 30 + median step 10)
    t = np.array([0, 4, 9, 10, 25, 27, 29, 39, 40], np.int64)
    x = np.array([1.0, 2.0, 6.0, 5.0, 1.0, 3.0, 8.0, 4.0, 100.0])
    ref = np.array([0, 10, 20, 30], np.int64)
    expect = {
        "mean": [3.0, 5.0, 4.0, 4.0],
        "min": [1.0, 5.0, 1.0, 4.0],
        "max": [6.0, 5.0, 8.0, 4.0],
        "last": [6.0, 5.0, 8.0, 4.0],
        "std": [np.sqrt(14 / 3), 0.0, np.sqrt(26 / 3), 0.0],
        "count": [3.0, 1.0, 3.0, 1.0],
    }
    for method, want in expect.items():
        got = align(t, x, ref, method)
        np.testing.assert_allclose(got.values[:, 0], want, rtol=1e-14)
        assert got.mask.all()
    # [5, 9) and the last interval [20, 20 + lower median of steps 5, 4, 1, 10 = 4) are empty
    gap = np.array([0, 5, 9, 10, 20], np.int64)
    assert align(t, x, gap, "count").values[:, 0].tolist() == [2, 0, 1, 1, 0]
    got = align(t, x, gap, "max")
    np.testing.assert_array_equal(got.values[:, 0], [2.0, np.nan, 6.0, 5.0, np.nan])
    np.testing.assert_array_equal(got.mask, [True, False, True, True, False])
    sparse = align(np.array([0, 30], np.int64), [1.0, 2.0], ref, "max")
    np.testing.assert_array_equal(sparse.mask, [True, False, False, True])


def test_last_interval_uses_lower_median_step():
    ref = np.array([0.0, 1.0, 3.0, 6.0, 10.0])  # steps 1, 2, 3, 4 -> lower median 2
    got = align(np.array([11.0, 11.99, 12.0]), [1.0, 2.0, 3.0], ref, "count")
    assert got.values[-1, 0] == 2.0


def test_overlap_weighted_mean():
    # sample spans: 0 holds [0,10), 1 holds [10,20), 2 holds [20,30), 3 holds [30,40)
    t = np.array([0, 10, 20, 30], np.int64)
    x = np.array([0.0, 1.0, 2.0, 3.0])
    got = align(t, x, np.array([0, 15, 30], np.int64), "mean", overlap_weighted=True)
    np.testing.assert_allclose(got.values[:, 0], [5 / 15, 25 / 15, 3.0], rtol=1e-15)
    # a slow stream still fills every interval its held value covers; before it: missing
    got = align(t, x, np.array([-10, -5, 0, 2, 4], np.int64), "mean", overlap_weighted=True)
    np.testing.assert_array_equal(got.mask, [False, False, True, True, True])
    np.testing.assert_array_equal(got.values[2:, 0], [0.0, 0.0, 0.0])
    plain = align(t, x, np.array([0, 15, 30], np.int64), "mean")
    np.testing.assert_array_equal(plain.values[:, 0], [0.5, 2.0, 3.0])


# ---------------------------------------------------------------- grid, streams, errors


def test_fixed_rate_grid():
    g = fixed_rate_grid(BIG_NS, BIG_NS + 10**9, 3)
    assert g.dtype == np.int64
    np.testing.assert_array_equal(g - BIG_NS, [0, 333_333_333, 666_666_667])
    np.testing.assert_array_equal(fixed_rate_grid(0, 10**9, 2.5), [0, 400_000_000, 800_000_000])
    np.testing.assert_allclose(fixed_rate_grid(1.0, 2.0, 4), [1.0, 1.25, 1.5, 1.75])
    assert fixed_rate_grid(5, 5, 100).size == 0
    with pytest.raises(ValueError, match="rate must be > 0"):
        fixed_rate_grid(0, 1, 0)


def test_fixed_rate_grid_never_wraps_past_int64():
    """A step past INT64_MAX used to wrap to a negative time that passed ``< stop``."""
    end = 2**63 - 1
    np.testing.assert_array_equal(fixed_rate_grid(end - 100, end, 10**7), [end - 100])
    np.testing.assert_array_equal(fixed_rate_grid(end - 100, end, 2.5e7),
                                  [end - 100, end - 60, end - 20])
    np.testing.assert_array_equal(fixed_rate_grid(0, 10**9, 1e-30), [0])  # 1e39 ns step
    g = fixed_rate_grid(-(2**63) + 1, end, 1e-9)  # one point per ~1e18 ns over the full range
    assert g.size == 19 and (np.diff(g) > 0).all() and g[0] == -(2**63) + 1


def test_datetime64_outside_the_ns_range_is_refused_not_wrapped():
    """datetime64[s] after 2262 used to wrap into 1715 and pick the wrong sample silently."""
    t = np.array(["2300-01-01T00:00:00", "2300-01-01T00:00:10"], "datetime64[s]")
    ref = np.array(["2300-01-01T00:00:08"], "datetime64[s]")
    want = pd.merge_asof(pd.DataFrame({"t": ref}), pd.DataFrame({"t": t, "v": [1.0, 2.0]}),
                         on="t", direction="nearest")["v"].tolist()
    assert want == [2.0]  # pandas keeps seconds; int64 ns cannot hold these times
    with pytest.raises(ValueError, match="timestamps holds 2300-01-01T00:00:00, outside the"):
        align(t, [1.0, 2.0], ref.astype("datetime64[ns]"), "nearest")  # gave 1.0 before
    with pytest.raises(ValueError, match="reference holds 2300-01-01T00:00:08, outside the"):
        align(np.array(["2262-01-01"], "datetime64[ns]"), [1.0], ref, "nearest")
    # in range: coarse units are converted exactly and agree with pandas
    t = np.array(["2262-04-11T23:47:00", "2262-04-11T23:47:16"], "datetime64[s]")
    ref = np.array(["2262-04-11T23:47:09", "2262-04-11T23:47:07"], "datetime64[s]")
    got = align(t, [1.0, 2.0], ref, "nearest")
    right = pd.DataFrame({"t": t.astype("datetime64[ns]"), "v": [1.0, 2.0]})
    values, mask = _merge_asof(right, ["v"], ref.astype("datetime64[ns]"), "nearest", None)
    _assert_same(got, values, mask)
    assert got.values[:, 0].tolist() == [2.0, 1.0]


def test_float32_times_are_widened_exactly_not_compared_in_float32():
    """Documented divergence: pandas rounds the tolerance to float32 and keeps this step."""
    t, ref = np.array([0.1], np.float32), np.array([0.2], np.float32)
    want = pd.merge_asof(pd.DataFrame({"t": ref}), pd.DataFrame({"t": t, "v": [1.0]}), on="t",
                         tolerance=0.1)["v"].tolist()
    assert want == [1.0]  # float32(0.2) - float32(0.1) == float32(0.1) <= float32(0.1)
    assert float(ref[0]) - float(t[0]) == 0.10000000149011612 > 0.1  # the exact distance
    assert not align(t, [1.0], ref, "previous", tolerance=0.1).mask[0]
    assert align(t, [1.0], ref, "previous", tolerance=0.1000000015).mask[0]


def test_align_streams():
    ref = np.array([0, 10, 20], np.int64)
    streams = {"acc": (np.array([1, 11], np.int64), [[1.0, 2.0], [3.0, 4.0]]),
               "hr": (np.array([0, 15], np.int64), [60.0, 70.0])}
    out = align_streams(streams, ref, {"acc": "previous", "hr": {"method": "count"}})
    np.testing.assert_array_equal(out["acc"].mask, [False, True, True])
    np.testing.assert_array_equal(out["hr"].values[:, 0], [1, 1, 0])
    with pytest.raises(ValueError, match=r"missing \['hr'\]"):
        align_streams(streams, ref, {"acc": "previous"})
    with pytest.raises(ValueError, match="stream 'hr': unknown align options"):
        align_streams(streams, ref, {"acc": "previous", "hr": {"methd": "count"}})
    with pytest.raises(ValueError, match="stream 'hr': unknown method"):
        align_streams(streams, ref, {"acc": "previous", "hr": "cubic"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "cubic"}, "unknown method 'cubic'; use one of nearest"),
        ({"duplicates": "drop"}, "unknown duplicates policy 'drop'"),
        ({"values": np.ones(3)}, "values has 3 rows but timestamps has 2"),
        ({"values": np.ones((2, 1, 1))}, r"values must be \[N\] or \[N, C\]"),
        ({"values": ["a", "b"]}, "values must be numeric"),
        ({"timestamps": np.zeros((2, 1), np.int64)}, r"timestamps must be 1-D \[N\]"),
        ({"timestamps": np.array([0.0, 1.0])}, "both must be int64 nanoseconds or both float"),
        ({"tolerance": -1}, "tolerance must be >= 0"),
        ({"tolerance": 0.5}, "whole number of nanoseconds"),
        ({"method": "mean", "tolerance": 5}, "tolerance only applies to methods"),
        ({"method": "max", "overlap_weighted": True}, "overlap_weighted=True only applies"),
        ({"method": "mean", "reference": np.array([3, 1], np.int64)}, "non-decreasing reference"),
        ({"method": "std", "reference": np.array([3], np.int64)}, "at least 2 reference"),
        ({"reference": np.array([0.0, np.nan]), "timestamps": [0.0, 1.0]}, "NaN or inf"),
        ({"timestamps": np.array([1, 2], "timedelta64[s]")}, "view\\('int64'\\)"),
        ({"reference": np.array([NAT, 1], np.int64)}, "reference contains 1 NaT"),
        ({"offset": 2**63 - 1}, "offset=9223372036854775807 pushes timestamps"),
        ({"offset": -(2**63), "timestamps": np.array([-1, 0])}, "outside the int64 nanosecond"),
        ({"tolerance": np.timedelta64("NaT")}, "tolerance is NaT"),
        ({"method": "mean", "reference": np.array([0, 2**62, 2**63 - 1], np.int64)},
         "reference: the last window ends at"),
        # found by the adversarial audit: these used to crash obscurely or pass silently
        ({"timestamps": np.array([["2020-01-01", "2020-01-02"]], "datetime64[ns]")},
         r"timestamps must be 1-D \[N\], got shape \(1, 2\)"),  # was numpy's "too deep"
        ({"reference": np.datetime64("2020-01-01", "ns")},
         r"reference must be 1-D \[N\], got shape \(\)"),  # was an IndexError
        ({"tolerance": np.timedelta64(200_000, "D")},  # was "tolerance must be >= 0"
         "tolerance holds 200000 days, outside the int64 nanosecond range"),
        ({"offset": np.timedelta64(200_000, "D")},  # was silently wrapped to -1.2e18 ns
         "offset holds 200000 days, outside the int64 nanosecond range"),
        ({"timestamps": np.array([0.0, 1.0]), "reference": np.array([0.5]), "tolerance": 10**400},
         "tolerance must be finite, got an integer too large"),  # was OverflowError
        ({"timestamps": np.array([0.0, 1e308]), "reference": np.array([0.5]), "offset": 1e308},
         "offset=1e[+]308 pushes timestamps past the float64 range"),  # was a sample at +inf
        ({"values": np.array([1 + 2j, 3j])}, "values are complex"),  # imaginary part was dropped
    ],
)
def test_value_errors_say_what_is_wrong(kwargs, message):
    args = {"timestamps": np.array([0, 1], np.int64), "values": np.ones(2),
            "reference": np.array([0, 1], np.int64)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        align(**args)


# ---------------------------------------------------------------- real data: MobiFall


def _read_mobifall(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()
    start = [line.strip() for line in lines].index("@DATA") + 1
    df = pd.read_csv(io.StringIO("\n".join(lines[start:])), header=None,
                     names=["t", "x", "y", "z"], dtype={"t": np.int64})
    return df["t"].to_numpy(), df[["x", "y", "z"]].to_numpy(np.float64)


@pytest.fixture
def mobifall_dir(data_dir: Path) -> Path:
    """MobiFall v2 under ``$MMKERAS_DATA_DIR`` (``data_dir`` fails, never skips, when unset)."""
    path = data_dir / "sensors" / "mobifall_v2"
    if not path.is_dir():
        pytest.fail(f"MobiFall data not found at {path}; check MMKERAS_DATA_DIR")
    return path


@pytest.mark.parametrize("trial", ["sub2/FALLS/FOL/FOL_{}_2_1.txt", "sub4/ADL/STU/STU_{}_4_6.txt"])
def test_mobifall_acc_onto_gyro_equals_pandas(mobifall_dir, trial):
    acc_path, gyro_path = (mobifall_dir / trial.format(k) for k in ("acc", "gyro"))
    for p in (acc_path, gyro_path):
        if not p.is_file():
            pytest.fail(f"MobiFall file missing: {p}")
    t_acc, acc = _read_mobifall(acc_path)
    t_gyro, _ = _read_mobifall(gyro_path)
    assert acc.shape[0] > 500 and t_gyro.size > 1000
    right = pd.DataFrame(acc, columns=["x", "y", "z"]).assign(t=t_acc)
    tol = 10_000_000  # 10 ms
    for method, direction, tolerance in [("nearest", "nearest", tol), ("previous", "backward", tol),
                                         ("previous", "backward", None)]:
        got = align(t_acc, acc, t_gyro, method, tolerance=tolerance)
        values, mask = _merge_asof(right, ["x", "y", "z"], t_gyro, direction, tolerance)
        _assert_same(got, values, mask)
        assert got.mask.mean() > 0.8  # most gyro steps find an acc sample
    if "STU" in trial:  # the gappy trial (212 ms hole) must leave steps missing at 10 ms
        assert not align(t_acc, acc, t_gyro, "nearest", tolerance=tol).mask.all()


def test_large_sorted_inputs_take_the_merge_path_and_agree_with_pandas():
    """>= 2**20 sorted reference steps use the compiled linear merge, not binary searches."""
    from mmkeras.data import align as align_module

    rng = np.random.default_rng(7)
    n = align_module._MERGE_MIN + 1000
    t = np.cumsum(rng.integers(5_000_000, 15_000_000, n)).astype(np.int64)
    ref = np.cumsum(rng.integers(5_000_000, 15_000_000, n)).astype(np.int64)
    ref[100:110] = ref[100]  # repeated reference steps
    np.testing.assert_array_equal(
        align_module._merge_count_le(t, ref), np.searchsorted(t, ref, side="right")
    )
    x = rng.normal(size=(n, 2))
    left = pd.DataFrame({"t": ref})
    right = pd.DataFrame({"t": t, "a": x[:, 0], "b": x[:, 1]})
    cases = (("previous", "backward", 8_000_000), ("nearest", "nearest", None))
    for method, direction, tol in cases:
        got = align(t, x, ref, method, tolerance=tol)
        want = pd.merge_asof(left, right, on="t", direction=direction, tolerance=tol)
        np.testing.assert_array_equal(got.values, want[["a", "b"]].to_numpy())
        np.testing.assert_array_equal(got.mask, want["a"].notna().to_numpy())


# ---------------------------------------------------------------- int64 edges: NaT, overflow


def test_nat_timestamps_are_missing_samples_not_values_at_int64_min():
    """The issue's case: numpy gives 1.0 (the NaT row is not a sample); we gave 0.0."""
    got = align(np.array([NAT, 0], np.int64), [0.0, 1.0], np.array([0], np.int64), "linear")
    assert got.mask.tolist() == [True] and got.values[0, 0] == 1.0
    t = np.array([0, NAT, 10, 20], np.int64)
    x = np.array([1.0, 99.0, 2.0, 3.0])
    ref = np.array([-5, 5, 10, 15, 25], np.int64)
    clean = t != NAT
    for method in ("nearest", "previous", "linear", "mean", "count"):
        kwargs = {"tolerance": 5} if method == "nearest" else {}
        _assert_same(align(t, x, ref, method, **kwargs), *align(t[clean], x[clean], ref, method,
                                                                   **kwargs))
    dates = np.array(["2024-01-01T00:00:00", "NaT", "2024-01-01T00:00:02"], "datetime64[ns]")
    ref = np.array(["2024-01-01T00:00:01", "2024-01-01T00:00:02"], "datetime64[ns]")
    got = align(dates, [1.0, 50.0, 3.0], ref, "linear")
    assert got.values[:, 0].tolist() == [2.0, 3.0] and got.mask.tolist() == [True, True]


def test_linear_and_weighted_mean_across_more_than_2_63_ns():
    """Streams spanning more than 2**63 ns: exact uint64 differences, no wrap-around."""
    lo, hi = -3 * 2**61, 3 * 2**61  # span 1.5 * 2**63
    t = np.array([lo, hi], np.int64)
    ref = np.array([lo, 0, hi], np.int64)
    got = align(t, [0.0, 6.0], ref, "linear")
    np.testing.assert_array_equal(got.values[:, 0], [0.0, 3.0, 6.0])
    assert got.mask.all()
    assert align(t, [0.0, 6.0], ref, "linear", tolerance=2**63 - 1).mask.tolist() == [
        True, False, True]  # the bridged gap exceeds the tolerance: missing, not wrapped
    # the first sample holds for 2**63 ns; windows [lo, 0) and [0, -lo)
    w = align(np.array([lo, 2**61], np.int64), [1.0, 3.0], np.array([lo, 0], np.int64), "mean",
              overlap_weighted=True)
    np.testing.assert_allclose(w.values[:, 0], [1.0, 7 / 3], rtol=1e-15)
    assert w.mask.all()


@pytest.mark.parametrize("method", ["nearest", "previous"])
def test_asof_with_tolerance_does_not_wrap_for_distances_near_2_64(method):
    t = np.array([2**63 - 1], np.int64)  # the only sample, 2**64 - 2 ns after the reference
    ref = np.array([-(2**63) + 1], np.int64)
    for tol in (0, 5, 2**63 - 1):
        got = align(t, [7.0], ref, method, tolerance=tol)
        assert not got.mask[0] and np.isnan(got.values[0, 0])
    far = align(np.array([-(2**63) + 1], np.int64), [7.0], t, method, tolerance=2**63 - 1)
    assert not far.mask[0]  # 2**64 - 2 ns back: beyond any int64 tolerance
    assert align(np.array([-(2**63) + 1], np.int64), [7.0], t, method).mask[0]  # no tolerance


@settings(max_examples=200, deadline=None)
@given(
    t=st.lists(st.integers(-(2**63) + 1, 2**63 - 1), min_size=1, max_size=6, unique=True),
    ref=st.lists(st.integers(-(2**63) + 1, 2**63 - 1), min_size=1, max_size=6),
    tol=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    method=st.sampled_from(["nearest", "previous"]),
)
def test_asof_over_the_whole_int64_range_equals_exact_python(t, ref, tol, method):
    """Exact Python integers are the reference: no distance may wrap."""
    ts = sorted(t)
    got = align(np.array(t, np.int64), np.array(t, np.float64), np.array(ref, np.int64), method,
                tolerance=tol)
    for i, r in enumerate(ref):
        back = [s for s in ts if s <= r]
        cands = [(r - back[-1], back[-1])] if back else []
        if method == "nearest":
            fwd = [s for s in ts if s > r]
            cands += [(fwd[0] - r, fwd[0])] if fwd else []
        best = min(cands, default=None)  # ties: the smaller (earlier) sample wins
        present = best is not None and (tol is None or best[0] <= tol)
        assert got.mask[i] == present
        if present:
            assert got.values[i, 0] == float(best[1])


def test_durations_are_accepted_as_timedeltas():
    t = np.array([0, 1_000_000_000, 2_000_000_000], np.int64)
    ref = np.array([1_400_000_000, 2_600_000_000], np.int64)
    x = np.array([1.0, 2.0, 3.0])
    want = align(t, x, ref, "nearest", tolerance=500_000_000, offset=-100_000_000)
    for tol, off in [(np.timedelta64(500, "ms"), np.timedelta64(-100, "ms")),
                     (pd.Timedelta("0.5s"), pd.Timedelta("-0.1s")),
                     (datetime.timedelta(milliseconds=500),
                      datetime.timedelta(milliseconds=-100))]:
        _assert_same(align(t, x, ref, "nearest", tolerance=tol, offset=off), *want)
    secs = align(t / 1e9, x, ref / 1e9, "nearest", tolerance=pd.Timedelta("0.5s"))
    assert secs.mask.tolist() == [True, False]
    for ns, mask in ((400_000_000, [True, False]), (399_999_999, [False, False])):
        got = align(t, x, ref, "nearest", tolerance=pd.Timedelta(ns, "ns"))  # exact ns kept
        assert got.mask.tolist() == mask
