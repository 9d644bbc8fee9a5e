import numpy as np
import pytest

from mmkeras.data.windowing import (
    broadcast_label,
    interval_labels,
    multirate_windows,
    sliding_windows,
    window_labels,
    window_starts,
)


@pytest.mark.parametrize(
    ("n", "length", "hop", "drop", "expected"),
    [
        (10, 4, 3, True, [0, 3, 6]),
        (10, 4, 3, False, [0, 3, 6, 9]),
        (9, 4, 5, True, [0, 5]),
        (8, 4, 4, True, [0, 4]),
        (8, 4, 4, False, [0, 4]),
        (3, 4, 1, True, []),
        (3, 4, 1, False, [0, 1, 2]),
        (0, 4, 1, False, []),
    ],
)
def test_window_starts(n, length, hop, drop, expected):
    starts = window_starts(n, length, hop, drop)
    assert starts.tolist() == expected and starts.dtype == np.int64


def test_window_starts_validation():
    for args in [(10, 0, 1), (10, 1, 0), (-1, 1, 1)]:
        with pytest.raises(ValueError, match="length"):
            window_starts(*args)


def test_sliding_windows_shapes_hop_and_view():
    x = np.arange(2 * 23 * 3).reshape(2, 23, 3).transpose(1, 0, 2)  # [T=23, 2, 3], non-contiguous
    w = sliding_windows(x, length=5, hop=4)
    assert w.shape == (5, 5, 2, 3)
    assert np.shares_memory(w, x) and not w.flags.writeable
    for i, s in enumerate(window_starts(23, 5, 4)):
        np.testing.assert_array_equal(w[i], x[s : s + 5])


def test_sliding_windows_pad_end_and_short_input():
    x = np.arange(10.0)
    w = sliding_windows(x, 4, 3, drop_remainder=False, pad_value=-1)
    np.testing.assert_array_equal(w[-1], [9, -1, -1, -1])
    np.testing.assert_array_equal(w[-2], [6, 7, 8, 9])
    assert w.shape == (4, 4)
    empty = sliding_windows(np.zeros((3, 2), np.float32), 4, 1)
    assert empty.shape == (0, 4, 2) and empty.dtype == np.float32


def test_majority_with_ties_to_smallest_label():
    y = np.array([5, 5, 3, 3, 3, 9, 9, 9, 9, 5])
    # windows of 4 every 2: [5,5,3,3] tie -> 3; [3,3,3,9] -> 3; [3,9,9,9] -> 9; [9,9,9,5] -> 9
    assert window_labels(y, 4, 2).tolist() == [3, 3, 9, 9]
    assert window_labels(np.array([-1, 2, 2, -1]), 4, 1).tolist() == [-1]
    # tail window with drop_remainder=False uses the existing steps only: [9, 5] tie -> 5
    assert window_labels(y, 4, 4, drop_remainder=False).tolist() == [3, 9, 5]


def test_majority_matches_bruteforce():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=500)
    got = window_labels(y, 16, 7)
    for i, s in enumerate(window_starts(500, 16, 7)):
        counts = np.bincount(y[s : s + 16], minlength=4)
        assert got[i] == np.flatnonzero(counts == counts.max())[0]


def test_any_and_last():
    binary = np.array([0, 0, 1, 0, 0, 0, 0, 1])
    assert window_labels(binary, 3, 2, "any").tolist() == [1, 1, 0]
    multi_hot = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 0]])
    expected = [[1, 0], [0, 0], [0, 1], [0, 1]]
    np.testing.assert_array_equal(window_labels(multi_hot, 2, 1, "any"), expected)
    assert window_labels(np.arange(10) * 10, 4, 3, "last").tolist() == [30, 60, 90]
    assert window_labels(np.arange(10), 4, 3, "last", drop_remainder=False).tolist() == [3, 6, 9, 9]
    np.testing.assert_array_equal(window_labels(multi_hot, 2, 2, "last"), [[0, 0], [0, 1]])


def test_window_labels_validation():
    with pytest.raises(ValueError, match="integer class labels"):
        window_labels(np.array([0.0, 1.0]), 1, 1)
    with pytest.raises(ValueError, match="rule"):
        window_labels(np.array([0, 1]), 1, 1, "mode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="broadcast_label"):
        window_labels(np.array(3), 1, 1)


def test_broadcast_label():
    assert broadcast_label(4, 3).tolist() == [4, 4, 4]
    out = broadcast_label(np.array([0, 1, 1]), 2)
    assert out.shape == (2, 3) and out.flags.writeable


INTERVALS = [(1.0, 3.0, 2), (2.5, 6.0, 1), (5.0, 7.0, 1)]  # label 1 spans merge to [2.5, 7)


def test_interval_majority_largest_overlap_and_ties():
    starts = np.array([0.0, 2.0, 4.0, 8.0, 1.75])
    labels, keep = interval_labels(INTERVALS, starts, 2.0)
    # [0,2): 2 covers 1.0 -> 2; [2,4): 2 covers 1.0, 1 covers 1.5 -> 1; [4,6): 1;
    # [8,10): nothing -> background 0; [1.75,3.75): 2 covers 1.25, 1 covers 1.25 -> tie -> 1
    assert labels.tolist() == [2, 1, 1, 0, 1]
    assert keep.all()


def test_interval_min_overlap_background_or_excluded():
    starts = np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    labels, keep = interval_labels(INTERVALS, starts, 2.0, "min_overlap", 0.6, background=9)
    # best fractions: 0.5 (2), 0.75 (1), 1.0 (1), 0.5 (1), 0
    assert labels.tolist() == [9, 1, 1, 9, 9] and keep.all()
    labels, keep = interval_labels(INTERVALS, starts, 2.0, "min_overlap", 0.5, background=None)
    assert keep.tolist() == [True, True, True, True, False]
    assert labels[keep].tolist() == [2, 1, 1, 1]


def test_interval_same_label_overlaps_are_not_double_counted():
    duplicated = [(0.0, 1.0, 1), (0.0, 1.0, 1), (0.0, 1.5, 0)]
    labels, _ = interval_labels(duplicated, np.array([0.0]), 2.0, background=None)
    assert labels.tolist() == [0]  # label 1 covers 1.0 (not 2.0) < 1.5


def test_interval_validation_and_no_intervals():
    labels, keep = interval_labels([], np.array([0.0, 1.0]), 1.0, background=None)
    assert not keep.any() and labels.shape == (2,)
    with pytest.raises(ValueError, match="ends before"):
        interval_labels([(2.0, 1.0, 0)], np.array([0.0]), 1.0)
    with pytest.raises(ValueError, match="min_overlap"):
        interval_labels(INTERVALS, np.array([0.0]), 1.0, "min_overlap", 0.0)


def _streams():
    rng = np.random.default_rng(1)
    vib = rng.normal(size=(12_000, 3))  # 12 s at 1000 Hz
    env = rng.normal(size=(12, 2))  # 12 s at 1 Hz
    acc = rng.normal(size=(12 * 32,))  # 12 s at 32 Hz, no channel axis
    return {"vib": (vib, 1000), "env": (env, 1.0), "acc": (acc, 32)}


def test_multirate_against_hand_indexing():
    streams = _streams()
    lookback = {"vib": 1.0, "env": 8.0, "acc": 0.5}
    ends = [8.0, 10.0, 12.0]
    out = multirate_windows(streams, ends, lookback)
    assert out["vib"].shape == (3, 1000, 3)
    assert out["env"].shape == (3, 8, 2)
    assert out["acc"].shape == (3, 16)
    vib, env, acc = streams["vib"][0], streams["env"][0], streams["acc"][0]
    np.testing.assert_array_equal(out["vib"][0], vib[7000:8000])
    np.testing.assert_array_equal(out["vib"][2], vib[11000:12000])
    np.testing.assert_array_equal(out["env"][0], env[0:8])
    np.testing.assert_array_equal(out["env"][1], env[2:10])
    np.testing.assert_array_equal(out["acc"][1], acc[304:320])


def test_multirate_fractional_end_times_and_errors():
    streams = _streams()
    lookback = {"vib": 0.25, "env": 2.0, "acc": 0.25}
    with pytest.raises(ValueError, match=r"env: end_times_s \* rate_hz"):
        multirate_windows(streams, [2.5], lookback)
    del streams["env"], lookback["env"]
    out = multirate_windows(streams, [0.25, 2.5], lookback)
    np.testing.assert_array_equal(out["vib"][1], streams["vib"][0][2250:2500])
    with pytest.raises(ValueError, match=r"vib: window 1 .* needs samples \[-150, 100\)"):
        multirate_windows(streams, [0.5, 0.1], {"vib": 0.25, "acc": 0.25})
    with pytest.raises(ValueError, match=r"vib: window 0 .* stream has \[0, 12000\)"):
        multirate_windows(streams, [12.5], lookback)
    with pytest.raises(ValueError, match="keys"):
        multirate_windows(streams, [1.0], {"vib": 1.0})
    with pytest.raises(ValueError, match="lookback_s \\* rate_hz"):
        multirate_windows(streams, [1.0], {"vib": 1.0, "acc": 0.01})
    with pytest.raises(ValueError, match="rate_hz"):
        multirate_windows({"a": (np.zeros(10), 2.5)}, [1.0], {"a": 1.0})
