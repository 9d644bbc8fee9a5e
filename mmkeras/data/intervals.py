"""Alignment of interval-valued streams onto reference intervals (e.g. word timings).

:func:`align_intervals` takes frames ``(starts [N], ends [N], values [N] or [N, C])`` (each
frame holds its value over ``[start, end]``, such as 10 ms acoustic frames) and reference
intervals ``(ref_starts [M], ref_ends [M])`` that may be gapped, overlapping or in any order
(word timings), and returns :class:`~mmkeras.data.align.Aligned` ``(values float64 [M, C],
mask bool [M])``: one aggregated row per reference interval, NaN and ``mask=False`` where no
frame counts.

Rules (``overlap(f, i) = min(end_f, ref_end_i) - max(start_f, ref_start_i)``, computed in
float64 exactly as written)
    ``"any_overlap"``
        Equal-weight mean of every frame with ``overlap > min_overlap``; a frame crossing a
        reference boundary counts fully in both intervals. This is the CMU Multimodal SDK's
        ``mmdataset.align`` followed by an averaging collapse function: its
        ``__intersect_and_copy`` keeps a frame when the clipped intersection is longer than its
        ``epsilon`` (1e-5 s), and it skips reference intervals shorter than ``epsilon`` (which
        no frame can then overlap by more than ``epsilon``), so ``min_overlap=1e-5`` reproduces
        it (``benchmarks/bench_intervals.py`` checks this on the SDK's loop).
    ``"overlap_weighted"``
        Mean weighted by ``overlap`` over the frames with ``overlap > min_overlap``.
    ``"start_in"``
        Equal-weight mean of the frames with ``ref_start <= start < ref_end`` (``min_overlap``
        does not apply).

Times are float seconds, or int64 nanoseconds (rebased to the earliest time and converted
to float64, exact for spans below 2**53 ns, about 104 days; a longer span is refused). Frames
with NaN or inf values are dropped (missing samples). Everything is vectorised: sorted
searches give each reference interval its candidate frames, whose overlaps are computed for all
pairs at once and reduced per interval, a block of intervals at a time.

Example:
    >>> import numpy as np
    >>> starts = np.arange(6) * 0.5                       # frames [0, 0.5), [0.5, 1), ...
    >>> words = align_intervals(starts, starts + 0.5, np.arange(6.0), [0.25, 2.0], [0.75, 2.1])
    >>> words.values[:, 0].tolist(), words.mask.tolist()
    ([0.5, 4.0], [True, True])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from mmkeras.data.align import Aligned

RULES = ("any_overlap", "overlap_weighted", "start_in")
_PAIRS_PER_BLOCK = 1 << 16  # (interval, candidate frame) pairs reduced at once


def align_intervals(
    starts: ArrayLike,
    ends: ArrayLike,
    values: ArrayLike,
    ref_starts: ArrayLike,
    ref_ends: ArrayLike,
    rule: str = "any_overlap",
    *,
    min_overlap: float = 0.0,
) -> Aligned:
    """Aggregate interval frames over each reference interval; see the module docstring.

    Args:
        starts, ends: [N] frame intervals (``start <= end``), float seconds or int64 ns.
        values: [N] or [N, C] frame values; rows with NaN/inf are dropped.
        ref_starts, ref_ends: [M] reference intervals (``start <= end``), same unit.
        rule: ``"any_overlap"``, ``"overlap_weighted"`` or ``"start_in"``.
        min_overlap: a frame counts only when its overlap exceeds this (>= 0; same unit as
            the times; the CMU SDK uses 1e-5 s).

    Returns:
        :class:`~mmkeras.data.align.Aligned` with ``values`` [M, C] and ``mask`` [M].
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    try:
        m_over = float(min_overlap)
    except (TypeError, ValueError) as err:
        raise ValueError(f"min_overlap must be a number, got {min_overlap!r}") from err
    if not (np.isfinite(m_over) and m_over >= 0):
        raise ValueError(f"min_overlap must be finite and >= 0, got {min_overlap!r}")
    if rule == "start_in" and m_over:
        raise ValueError("min_overlap does not apply to rule='start_in'; drop it")
    arrays = [_times(n, a) for n, a in (("starts", starts), ("ends", ends),
                                        ("ref_starts", ref_starts), ("ref_ends", ref_ends))]
    s, e, a, b = _to_float(arrays)
    for (n_lo, lo), (n_hi, hi) in ((("starts", s), ("ends", e)),
                                   (("ref_starts", a), ("ref_ends", b))):
        if lo.size != hi.size:
            raise ValueError(f"{n_lo} has {lo.size} entries but {n_hi} has {hi.size}")
        bad = np.flatnonzero(hi < lo)
        if bad.size:
            raise ValueError(f"{n_hi} must be >= {n_lo}: {bad.size} intervals end before they "
                             f"start, first at index {bad[0]}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != s.size:
        raise ValueError(f"values must be [N] or [N, C] with N = {s.size} frames, got shape "
                         f"{x.shape}")
    keep = np.isfinite(x).all(axis=1)
    if rule == "any_overlap":
        keep &= (e - s) > m_over  # overlap <= frame length: shorter frames never count
    if not keep.all():
        s, e, x = s[keep], e[keep], x[keep]
    if s.size > 1 and not (s[1:] >= s[:-1]).all():
        order = np.argsort(s, kind="stable")
        s, e, x = s[order], e[order], x[order]

    m, c = a.size, x.shape[1]
    out = Aligned(np.full((m, c), np.nan), np.zeros(m, bool))
    if m == 0 or s.size == 0:
        return out
    hi = np.searchsorted(s, b, side="left")  # every counted frame starts before ref_end
    if rule == "start_in":
        lo = np.searchsorted(s, a, side="left")
    else:  # a frame starting before ref_start - its length ends before ref_start (2x: rounding)
        lo = np.searchsorted(s, a - 2 * float((e - s).max()), side="left")
    lo = np.minimum(lo, hi)
    if rule == "start_in":  # frames with ref_start <= start < ref_end: one index range each
        ok = np.flatnonzero(hi > lo)
        bounds = np.empty(2 * ok.size, np.intp)
        bounds[0::2], bounds[1::2] = lo[ok], hi[ok]
        xp = np.concatenate([x, np.zeros((1, c))])  # so that hi == N is a valid index
        out.values[ok] = np.add.reduceat(xp, bounds, axis=0)[0::2] / (hi - lo)[ok, None]
        out.mask[ok] = True
    else:
        _reduce_pairs(s, e, x, a, b, lo, hi, rule, m_over, out)
    return out


def _times(name: str, arr: ArrayLike) -> np.ndarray:
    t = np.asarray(arr)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {t.shape}")
    if t.dtype.kind in "iu":
        if t.size and t.dtype.kind == "u" and t.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} has values beyond the int64 nanosecond range")
        return t.astype(np.int64)
    if t.dtype.kind != "f":
        raise ValueError(f"{name} must be float seconds or int64 nanoseconds, got {t.dtype}")
    if not np.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; drop those intervals first")
    return t.astype(np.float64, copy=False)


def _to_float(arrays: list[np.ndarray]) -> list[np.ndarray]:
    kinds = {a.dtype.kind for a in arrays if a.size}
    if kinds == {"i"}:
        lo = min(int(a.min()) for a in arrays if a.size)
        hi = max(int(a.max()) for a in arrays if a.size)
        if hi - lo >= 2**53:
            raise ValueError(f"times span {hi - lo} ns >= 2**53 ns (~104 days): float64 cannot "
                             "hold the offsets exactly; split the recording")
        return [(a - np.int64(lo)).astype(np.float64) for a in arrays]
    if len(kinds) > 1:
        raise ValueError("starts, ends, ref_starts and ref_ends must all be float seconds or "
                         "all int64 nanoseconds")
    return [a.astype(np.float64) for a in arrays]


def _weights(fs, fe, a, b, rule: str, m_over: float) -> np.ndarray:
    """Per (interval, frame) pair: weight (0 = does not count)."""
    overlap = np.minimum(fe, b) - np.maximum(fs, a)
    counted = overlap > m_over
    if rule == "any_overlap":
        return counted.astype(np.float64)
    return np.where(counted, overlap, 0.0)


def _reduce_pairs(s, e, x, a, b, lo, hi, rule, m_over, out: Aligned) -> None:
    """General frames (nested or unsorted ends): test every candidate pair, a block at a time."""
    counts = hi - lo
    csum = np.cumsum(counts)
    m = a.size
    start = 0
    while start < m:
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + _PAIRS_PER_BLOCK, side="right"))
        stop = max(stop, start + 1)
        block = np.arange(start, stop)
        n_pairs = int(csum[stop - 1] - base)
        if n_pairs:
            ref = np.repeat(block, counts[block])
            first = np.repeat(csum[block] - counts[block] - base, counts[block])
            frame = lo[ref] + np.arange(n_pairs) - first
            w = _weights(s[frame], e[frame], a[ref], b[ref], rule, m_over)
            keep = np.flatnonzero(w > 0)
            ref, frame, w = ref[keep], frame[keep], w[keep]
            if ref.size:
                seg = np.flatnonzero(np.concatenate(([True], ref[1:] != ref[:-1])))
                rows = ref[seg]
                num = np.add.reduceat(x[frame] * w[:, None], seg, axis=0)
                out.values[rows] = num / np.add.reduceat(w, seg)[:, None]
                out.mask[rows] = True
        start = stop
