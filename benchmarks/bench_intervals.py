"""Interval alignment on a 1-hour recording: the CMU Multimodal SDK's loop vs ``align_intervals``.

The case of issue 10: 9,000 word intervals with gaps (durations 0.1-0.5 s, pauses 0-0.2 s,
scaled to fill one hour) and 360,000 acoustic frames of 10 ms x 74 features (COVAREP-sized).
The SDK side is ``sdk_align`` from ``tests/test_intervals.py``: a statement-by-statement copy of
``mmdataset.align`` / ``__intersect_and_copy`` (mmsdk is not on PyPI, so its code path is
reproduced, not imported), collapsed with ``numpy.average`` and ``epsilon = 1e-5``. Ours:
``align_intervals(..., "any_overlap", min_overlap=1e-5)``; ``overlap_weighted`` and
``start_in`` are timed too.

    MMKERAS_DATA_DIR=unused .venv/bin/python benchmarks/bench_intervals.py [--words 9000]

``--words N`` runs the SDK loop on the first N words only (it takes minutes on all 9,000) and
scales its time to 9,000; ours always runs on all of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_intervals import SDK_EPSILON, sdk_align

from mmkeras.data.intervals import align_intervals

N_WORDS, N_FRAMES, N_FEATURES, FRAME_S = 9_000, 360_000, 74, 0.01


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames [N, 2], features [N, 74], words [9000, 2]) over one hour."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_FRAMES) * FRAME_S
    frames = np.stack([t, t + FRAME_S], axis=1)
    features = rng.normal(size=(N_FRAMES, N_FEATURES))
    dur, pause = rng.uniform(0.1, 0.5, N_WORDS), rng.uniform(0.0, 0.2, N_WORDS)
    scale = (N_FRAMES * FRAME_S - 1.0) / (dur + pause).sum()
    starts = 0.5 + np.concatenate(([0.0], np.cumsum((dur + pause) * scale)[:-1]))
    words = np.stack([starts, starts + dur * scale], axis=1)
    return frames, features, words


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=N_WORDS, help="words for the SDK loop")
    args = parser.parse_args()
    frames, x, words = make_case()
    s, e, a, b = frames[:, 0], frames[:, 1], words[:, 0], words[:, 1]

    ours_t, ours = best_of(lambda: align_intervals(s, e, x, a, b, min_overlap=SDK_EPSILON))
    w_t, _ = best_of(lambda: align_intervals(s, e, x, a, b, "overlap_weighted"))
    si_t, _ = best_of(lambda: align_intervals(s, e, x, a, b, "start_in"))

    k = min(args.words, N_WORDS)
    t0 = time.perf_counter()
    want, mask = sdk_align(frames, x, words[:k])
    sdk_t = (time.perf_counter() - t0) * N_WORDS / k

    diff = float(np.abs(ours.values[:k] - want).max())
    print(f"case: {N_WORDS} words, {N_FRAMES} frames x {N_FEATURES} features "
          f"(SDK loop on {k} words{'' if k == N_WORDS else ', time scaled to 9000'})")
    print(f"SDK loop (any overlap, equal weight): {sdk_t:9.2f} s")
    print(f"align_intervals any_overlap:          {ours_t:9.3f} s  ratio {sdk_t / ours_t:,.0f}x")
    print(f"align_intervals overlap_weighted:     {w_t:9.3f} s")
    print(f"align_intervals start_in:             {si_t:9.3f} s")
    print(f"same mask: {bool((ours.mask[:k] == mask).all())}, max abs difference {diff:.2e}")


if __name__ == "__main__":
    main()
