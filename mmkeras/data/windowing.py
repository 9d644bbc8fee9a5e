"""Fixed-length windows over aligned streams, their labels, and multi-rate windows.

Window ``i`` covers steps ``[starts[i], starts[i] + length)`` with ``starts[i] = i * hop``.

Example:
    >>> x = np.arange(10)
    >>> sliding_windows(x, length=4, hop=3).tolist()
    [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    >>> window_labels(np.array([0, 0, 1, 1, 2, 2, 2, 1, 1, 1]), 4, 3).tolist()
    [0, 2, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

SampleRule = Literal["majority", "any", "last"]
IntervalRule = Literal["majority", "min_overlap"]


def window_starts(n_steps: int, length: int, hop: int, drop_remainder: bool = True) -> np.ndarray:
    """Start indices (int64) of windows of ``length`` steps every ``hop`` steps.

    ``drop_remainder=True`` keeps only windows that fit: ``max(0, (n - length) // hop + 1)``.
    ``False`` keeps every start ``< n_steps`` (``ceil(n / hop)`` windows, like
    ``tf.signal.frame(pad_end=True)``); the tail windows then run past the data.

    Example:
        >>> window_starts(10, 4, 3).tolist(), window_starts(10, 4, 3, False).tolist()
        ([0, 3, 6], [0, 3, 6, 9])
    """
    if length < 1 or hop < 1 or n_steps < 0:
        raise ValueError(f"need length, hop >= 1 and n_steps >= 0; got {length}, {hop}, {n_steps}")
    stop = n_steps - length + 1 if drop_remainder else n_steps
    return np.arange(0, max(stop, 0), hop, dtype=np.int64)


def sliding_windows(
    x: np.ndarray,
    length: int,
    hop: int,
    drop_remainder: bool = True,
    pad_value: float = 0,
) -> np.ndarray:
    """Windows ``[W, length, ...]`` of ``x [T, ...]`` along the first axis.

    With ``drop_remainder=True`` the result is a read-only strided **view** of ``x`` (no
    copy; ``.copy()`` it before writing). ``False`` pads the tail with ``pad_value`` (a copy).

    Example:
        >>> w = sliding_windows(np.zeros((100, 3)), length=10, hop=5)
        >>> w.shape, w.base is not None
        ((19, 10, 3), True)
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have a time axis")
    starts = window_starts(x.shape[0], length, hop, drop_remainder)
    if starts.size == 0:
        return np.empty((0, length, *x.shape[1:]), x.dtype)
    pad = starts[-1] + length - x.shape[0]
    if pad > 0:
        x = np.concatenate([x, np.full((pad, *x.shape[1:]), pad_value, x.dtype)])
    view = np.lib.stride_tricks.sliding_window_view(x, length, axis=0)[::hop]
    return np.moveaxis(view, -1, 1)


def window_labels(
    labels: np.ndarray,
    length: int,
    hop: int,
    rule: SampleRule = "majority",
    drop_remainder: bool = True,
) -> np.ndarray:
    """One label per window from per-step labels, windows as in :func:`window_starts`.

    * ``"majority"``: ``labels [T]`` of integer classes; the most frequent class in the
      window, **ties -> the smallest label**.
    * ``"any"``: ``labels [T]`` binary or ``[T, K]`` multi-hot; 1 where any step in the
      window is positive (per class), as int64.
    * ``"last"``: the label of the window's last step (any ``[T, ...]``).

    Tail windows kept with ``drop_remainder=False`` use only the steps that exist.

    Example:
        >>> window_labels(np.array([2, 2, 1, 1, 0, 0]), 4, 2).tolist()   # tie 2/1 -> 1
        [1, 0]
        >>> window_labels(np.array([[0, 1], [1, 0], [0, 0]]), 2, 1, "any").tolist()
        [[1, 1], [1, 0]]
    """
    y = np.asarray(labels)
    if y.ndim == 0:
        raise ValueError("labels must have a time axis; use broadcast_label for one label")
    starts = window_starts(y.shape[0], length, hop, drop_remainder)
    ends = np.minimum(starts + length, y.shape[0])
    if rule == "last":
        return y[ends - 1]
    if rule == "any":
        return (_window_sums(y != 0, starts, ends) > 0).astype(np.int64)
    if rule == "majority":
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError("'majority' needs integer class labels of shape [T]")
        classes = np.unique(y)
        counts = np.empty((starts.size, classes.size), np.int64)
        for k, label in enumerate(classes):  # O(T) memory per class, not O(T * K)
            counts[:, k] = _window_sums(y == label, starts, ends)
        return classes[counts.argmax(axis=1)]  # argmax: first max = smallest label
    raise ValueError(f"rule must be 'majority', 'any' or 'last', got {rule!r}")


def _window_sums(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``values[s:e].sum(0)`` (as int64) for every window via one cumulative sum."""
    csum = np.cumsum(values, axis=0, dtype=np.int64)
    csum = np.concatenate([np.zeros((1, *values.shape[1:]), np.int64), csum])
    return csum[ends] - csum[starts]


def broadcast_label(label: np.ndarray | int | float, n_windows: int) -> np.ndarray:
    """Repeat one per-recording label (scalar or array) for each of ``n_windows`` windows.

    Example:
        >>> broadcast_label(3, 2).tolist()
        [3, 3]
    """
    label = np.asarray(label)
    return np.broadcast_to(label, (n_windows, *label.shape)).copy()


def interval_labels(
    intervals: Sequence[tuple[float, float, int]],
    starts: np.ndarray,
    length: float,
    rule: IntervalRule = "majority",
    min_overlap: float = 0.5,
    background: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Label windows ``[start, start + length)`` from labelled intervals ``[(start, end, label)]``.

    Intervals are half-open, in the same unit as ``starts``/``length`` (e.g. seconds:
    ``window_starts(...) / rate``). Intervals of the same label are merged first, so
    overlapping annotations are not counted twice.

    * ``"majority"``: the label with the largest overlap (ties -> smallest label); a window
      no interval touches is *unlabelled*. Uncovered time does not compete with the labels.
    * ``"min_overlap"``: as ``"majority"``, but the winner must cover at least
      ``min_overlap`` of the window; otherwise the window is *unlabelled*.

    Unlabelled windows get ``background``, or, when ``background`` is None, are excluded:
    returns ``(labels int64 [W], keep bool [W])``; ``keep`` is all True unless
    ``background`` is None, and ``labels[~keep]`` is meaningless (-1).

    Example:
        >>> iv = [(0.0, 1.5, 7), (1.5, 2.0, 3)]
        >>> interval_labels(iv, np.array([0.0, 1.0, 2.0]), 1.0, "min_overlap", 0.6)
        (array([7, 0, 0]), array([ True,  True,  True]))
    """
    starts = np.asarray(starts, dtype=np.float64)
    if length <= 0 or not 0 < min_overlap <= 1:
        raise ValueError("need length > 0 and 0 < min_overlap <= 1")
    if rule not in ("majority", "min_overlap"):
        raise ValueError(f"rule must be 'majority' or 'min_overlap', got {rule!r}")
    merged = _merge_intervals(intervals)
    classes = np.array(sorted(merged), dtype=np.int64)
    overlap = np.zeros((starts.size, classes.size))
    for k, label in enumerate(classes):
        for lo, hi in merged[int(label)]:
            covered = np.minimum(hi, starts + length) - np.maximum(lo, starts)
            overlap[:, k] += np.maximum(covered, 0.0)
    if classes.size:
        best = overlap.argmax(axis=1)
        best_overlap = overlap[np.arange(starts.size), best]
        labels = classes[best]
    else:
        best_overlap, labels = np.zeros(starts.size), np.zeros(starts.size, np.int64)
    threshold = min_overlap * length if rule == "min_overlap" else 0.0
    labelled = (best_overlap > 0) & (best_overlap >= threshold)
    fallback = -1 if background is None else background
    keep = labelled if background is None else np.ones(starts.size, bool)
    return np.where(labelled, labels, fallback).astype(np.int64), keep


def _merge_intervals(
    intervals: Sequence[tuple[float, float, int]],
) -> dict[int, list[tuple[float, float]]]:
    """Per label, the union of its intervals as sorted disjoint ``(start, end)`` pairs."""
    by_label: dict[int, list[tuple[float, float]]] = {}
    for lo, hi, label in sorted(intervals, key=lambda iv: (iv[2], iv[0])):
        if hi < lo:
            raise ValueError(f"interval ends before it starts: {(lo, hi, label)}")
        spans = by_label.setdefault(int(label), [])
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    return by_label


def multirate_windows(
    streams: Mapping[str, tuple[np.ndarray, float]],
    end_times_s: Sequence[float] | np.ndarray,
    lookback_s: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """Per-stream windows ``[W, L_s, ...]`` ending at shared times, each with its own lookback.

    Stream ``s`` is ``(array [T_s, ...], rate_hz)`` with an integer rate; sample ``i`` is at
    ``i / rate`` s (all streams share the origin t = 0). The window ending at ``e`` holds the
    ``L_s = lookback_s[s] * rate`` samples with ``e - lookback <= t < e``, i.e. indices
    ``[round(e * rate) - L_s, round(e * rate))``. ``e * rate`` and ``lookback * rate`` must be
    whole numbers (1e-6 tolerance).

    Raises ValueError if a window would start before 0 or end past the stream.

    Example:
        >>> vib = (np.zeros((10_000, 3)), 1000)      # 10 s at 1 kHz
        >>> env = (np.zeros((10, 2)), 1)             # 10 s at 1 Hz
        >>> w = multirate_windows({"vib": vib, "env": env}, [8.0, 9.0, 10.0],
        ...                       {"vib": 1.0, "env": 8.0})
        >>> w["vib"].shape, w["env"].shape
        ((3, 1000, 3), (3, 8, 2))
    """
    if set(streams) != set(lookback_s):
        raise ValueError(f"lookback_s keys {sorted(lookback_s)} != streams {sorted(streams)}")
    ends_s = np.asarray(end_times_s, dtype=np.float64).reshape(-1)
    out = {}
    for name, (array, rate) in streams.items():
        x = np.asarray(array)
        rate_i = int(_whole(rate, f"{name}: rate_hz"))
        if rate_i < 1:
            raise ValueError(f"{name}: rate_hz must be a positive integer, got {rate}")
        n = int(_whole(lookback_s[name] * rate_i, f"{name}: lookback_s * rate_hz"))
        if n < 1:
            raise ValueError(f"{name}: lookback_s must cover at least one sample")
        ends = _whole(ends_s * rate_i, f"{name}: end_times_s * rate_hz")
        bad = np.flatnonzero((ends - n < 0) | (ends > x.shape[0]))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}: window {i} (end {ends_s[i]} s, lookback {lookback_s[name]} s) needs "
                f"samples [{ends[i] - n}, {ends[i]}) but the stream has [0, {x.shape[0]})"
            )
        out[name] = x[(ends - n)[:, None] + np.arange(n)]
    return out


def _whole(value: float | np.ndarray, what: str, tol: float = 1e-6) -> np.ndarray:
    """Round to int64, raising if any element is more than ``tol`` from a whole number."""
    value = np.asarray(value, dtype=np.float64)
    rounded = np.rint(value)
    if np.any(np.abs(value - rounded) > tol):
        raise ValueError(f"{what} must be whole numbers, got {value}")
    return rounded.astype(np.int64)
