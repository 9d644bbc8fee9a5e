"""Tests for mmkeras.data.intervals against a loop that mirrors the CMU Multimodal SDK."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmkeras.data.intervals import align_intervals

SDK_EPSILON = 10e-6  # mmsdk.mmdatasdk.dataset.dataset.epsilon


def sdk_align(frames, features, refs, epsilon=SDK_EPSILON):
    """The CMU SDK's ``mmdataset.align`` for one entry, collapsed with ``numpy.average``.

    A faithful re-implementation of ``mmdataset.align`` / ``__intersect_and_copy``
    (CMU-MultiComp-Lab/CMU-MultimodalSDK, mmsdk/mmdatasdk/dataset/dataset.py): mmsdk is not on
    PyPI, so its loop is reproduced statement by statement. Returns ``(values, mask)``.
    """
    order = sorted(range(frames.shape[0]), key=lambda k: frames[k, 0])  # __get_relevant_entries
    sub, feats = frames[order, :], features[order, :]
    out = np.full((refs.shape[0], features.shape[1]), np.nan)
    mask = np.zeros(refs.shape[0], bool)
    for i in range(refs.shape[0]):
        ref = refs[i, :]
        if abs(ref[0] - ref[1]) < epsilon:
            continue
        ref_copy = ref.copy()
        ref_copy[1] = -ref_copy[1]
        ref_copy = ref_copy[::-1]
        sub_copy = sub.copy()
        sub_copy[:, 0] = -sub_copy[:, 0]
        where_intersect = np.all((sub_copy - ref_copy) > (-epsilon), axis=1)
        intersectors = sub[where_intersect, :]
        intersectors = np.concatenate(
            [np.maximum(intersectors[:, 0], ref[0])[:, None],
             np.minimum(intersectors[:, 1], ref[1])[:, None]], axis=1)
        intersectors_features = feats[where_intersect, :]
        where_nonzero_len = np.where(abs(intersectors[:, 0] - intersectors[:, 1]) > epsilon)
        intersectors_features = intersectors_features[where_nonzero_len]
        if intersectors_features.shape[0] == 0:
            continue
        out[i] = np.average(intersectors_features, axis=0)
        mask[i] = True
    return out, mask


def loop_rule(frames, features, refs, rule, min_overlap=0.0):
    """Plain per-interval loop for the other rules."""
    out = np.full((refs.shape[0], features.shape[1]), np.nan)
    mask = np.zeros(refs.shape[0], bool)
    for i, (a, b) in enumerate(refs):
        if rule == "start_in":
            w = ((frames[:, 0] >= a) & (frames[:, 0] < b)).astype(float)
        else:
            ov = np.minimum(frames[:, 1], b) - np.maximum(frames[:, 0], a)
            w = np.where(ov > min_overlap, ov, 0.0)
        if w.sum() > 0:
            out[i] = (w[:, None] * features).sum(axis=0) / w.sum()
            mask[i] = True
    return out, mask


def _words(rng, n, gap=True, overlap=False):
    dur = rng.uniform(0.05, 0.6, n)
    pause = rng.uniform(0.0, 0.3, n) * gap
    starts = np.cumsum(np.concatenate(([0.2], (dur + pause)[:-1])))
    ends = starts + dur
    if overlap:
        ends = ends + rng.uniform(0, 0.2, n)
    return np.stack([starts, ends], axis=1)


def test_docstring_example_by_hand():
    starts = np.arange(6) * 0.5
    got = align_intervals(starts, starts + 0.5, np.arange(6.0), [0.25, 2.0], [0.75, 2.1])
    assert got.values[:, 0].tolist() == [0.5, 4.0]  # frame 0 and 1 both cross 0.25..0.75


@pytest.mark.parametrize("overlap", [False, True])
def test_any_overlap_equals_sdk_loop(overlap):
    rng = np.random.default_rng(0)
    t = np.arange(3000) * 0.01
    frames = np.stack([t, t + 0.01], axis=1)
    x = rng.normal(size=(t.size, 5))
    refs = _words(rng, 60, overlap=overlap)
    refs = np.concatenate([refs, [[40.0, 41.0], [5.0, 5.000001]]])  # past the data; too short
    want, want_mask = sdk_align(frames, x, refs)
    got = align_intervals(frames[:, 0], frames[:, 1], x, refs[:, 0], refs[:, 1],
                          min_overlap=SDK_EPSILON)
    np.testing.assert_array_equal(got.mask, want_mask)
    assert not want_mask[-2:].any() and want_mask[:-2].all()
    np.testing.assert_allclose(got.values, want, rtol=0, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 40),
    m=st.integers(1, 15),
    rule=st.sampled_from(["any_overlap", "overlap_weighted", "start_in"]),
    grid=st.booleans(),
    min_overlap=st.sampled_from([0.0, 0.25]),
)
def test_rules_equal_loops_on_random_intervals(seed, n, m, rule, grid, min_overlap):
    """Unsorted, nested, zero-length and overlapping frames; on a grid to hit exact ties."""
    rng = np.random.default_rng(seed)
    if grid:
        s = rng.integers(0, 20, n) / 4
        e = s + rng.integers(0, 8, n) / 4
        a = rng.integers(-2, 22, m) / 4
        b = a + rng.integers(0, 8, m) / 4
    else:
        s = rng.uniform(0, 10, n)
        e = s + rng.exponential(1.0, n) * rng.integers(0, 2, n)
        a = rng.uniform(-1, 11, m)
        b = a + rng.exponential(1.5, m)
    x = rng.normal(size=(n, 3))
    frames, refs = np.stack([s, e], axis=1), np.stack([a, b], axis=1)
    if rule == "any_overlap":
        got = align_intervals(s, e, x, a, b, rule, min_overlap=min_overlap)
        want, mask = sdk_align(frames, x, refs, epsilon=min_overlap)
    else:
        assume(rule == "overlap_weighted" or min_overlap == 0)
        got = align_intervals(s, e, x, a, b, rule, min_overlap=min_overlap)
        want, mask = loop_rule(frames, x, refs, rule, min_overlap)
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_allclose(got.values, want, rtol=1e-12, atol=1e-12)


def test_frame_crossing_a_boundary_counts_in_both_words():
    got = align_intervals([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 10.0, 100.0],
                          [0.5, 1.5], [1.5, 2.5])
    assert got.values[:, 0].tolist() == [5.5, 55.0]
    w = align_intervals([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 10.0, 100.0],
                        [0.5, 1.5], [1.5, 2.5], "overlap_weighted")
    assert w.values[:, 0].tolist() == [5.5, 55.0]  # equal halves
    st_in = align_intervals([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 10.0, 100.0],
                            [0.5, 1.5], [1.5, 2.5], "start_in")
    assert st_in.values[:, 0].tolist() == [10.0, 100.0]


def test_gap_without_frames_is_absent_and_nan_rows_dropped():
    x = np.array([[1.0], [np.nan], [3.0]])
    got = align_intervals([0.0, 1.0, 5.0], [1.0, 2.0, 6.0], x, [1.2, 2.5, 0.0], [1.8, 4.0, 6.0])
    assert got.mask.tolist() == [False, False, True]
    assert np.isnan(got.values[:2]).all() and got.values[2, 0] == 2.0


def test_int64_nanoseconds_equal_float_seconds():
    rng = np.random.default_rng(3)
    base = 1_700_000_000_000_000_000
    t = np.arange(500, dtype=np.int64) * 10_000_000
    refs = np.rint(_words(rng, 10) * 1e9).astype(np.int64)
    x = rng.normal(size=(500, 2))
    got = align_intervals(base + t, base + t + 10_000_000, x, base + refs[:, 0],
                          base + refs[:, 1], "overlap_weighted")
    want = align_intervals(t / 1e9, (t + 10_000_000) / 1e9, x, refs[:, 0] / 1e9,
                           refs[:, 1] / 1e9, "overlap_weighted")
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "mean"}, "unknown rule 'mean'"),
        ({"min_overlap": -1.0}, "min_overlap must be finite and >= 0"),
        ({"rule": "start_in", "min_overlap": 0.1}, "min_overlap does not apply"),
        ({"ref_ends": [0.5]}, "ref_ends must be >= ref_starts"),
        ({"ends": [1.0]}, "starts has 2 entries but ends has 1"),
        ({"ref_starts": [np.nan]}, "ref_starts contains NaN"),
        ({"values": [[1.0, 2.0]]}, "values must be \\[N\\] or \\[N, C\\] with N = 2"),
        ({"starts": np.array([0, 1]), "ends": np.array([1, 2])}, "all be float seconds"),
    ],
)
def test_errors_name_the_argument(kwargs, message):
    args = {"starts": [0.0, 1.0], "ends": [1.0, 2.0], "values": [1.0, 2.0],
            "ref_starts": [1.0], "ref_ends": [2.0], **kwargs}
    with pytest.raises(ValueError, match=message):
        align_intervals(**args)


def test_span_beyond_float64_exactness_is_refused():
    with pytest.raises(ValueError, match="2\\*\\*53"):
        align_intervals(np.array([0, 2**60]), np.array([1, 2**60 + 1]), [1.0, 2.0],
                        np.array([0]), np.array([5]))
