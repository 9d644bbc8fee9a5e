"""Input pipeline and alignment benchmarks: tf.data vs plain Python, streaming vs in-memory
training, ``mmkeras.data.align`` vs ``pandas.merge_asof``.

Sections (each side by side in one process, repetitions interleaved so that load changes hit
both sides alike). Reported: median and best of each side; the ratio of each round's adjacent
pair of runs, median over rounds (what the goal is checked on); the ratio of the bests.

``pipeline``
    Examples/s of full passes over an avdigits split: ``avdigits.tf_pipeline`` against
    ``avdigits.python_loader(batch_size=...)`` computing the same features (read WAV, check
    the rate, pad/crop, log-mel dB with the ``top_db`` floor, standardised image, batch).
    The tf.data side is warmed up by one full pass (graph tracing); the Python side by one
    batch (imports). ``python_loader`` redoes its setup (file listing, MNIST, image
    statistics) on every call, which ``tf_pipeline`` does once at construction: it is
    timed in each round as the time to the first example of a ``batch_size=1`` loader and
    subtracted from that round's Python pass.
``training``
    Steady-state epoch time of one small model (the project's ``SpectrogramEncoder`` on the
    log-mel and ``ImageEncoder`` on the image, concatenated, softmax head) fed by
    ``tf_pipeline`` against the same features materialised in memory
    (``from_tensor_slices``). Same model object, batch size and order (no shuffling); one
    warm-up epoch per input, then one epoch of each in turn. Also reported: the share of a
    ``train_on_batch`` epoch the trainer spends blocked waiting for the next batch.
``align``
    10M-sample int64 ns stream (irregular ~100 Hz: steps uniform in 5-15 ms, 3 float64
    channels) onto another such stream's timestamps: ``align`` (numpy arrays in) against
    ``pandas.merge_asof`` (DataFrames built beforehand), results checked bit-equal.

Run from the repository root with the real data::

    MMKERAS_DATA_DIR=/path/to/data python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from data_pipelines import avdigits
from mmkeras.data.align import Aligned, align
from mmkeras.encoders.image import ImageEncoder
from mmkeras.encoders.spectrogram import SpectrogramEncoder

SECTIONS = ("pipeline", "training", "align")
T = TypeVar("T")
MS = 1_000_000  # ns


@dataclass
class Row:
    """One line of the final table; the ratios are oriented as the goal states them."""

    metric: str
    ours: str
    baseline: str
    ratio_rounds: float
    ratio_best: float
    goal: str
    met: bool
    note: str = ""


def _stats(xs: list[float]) -> tuple[float, float]:
    return min(xs), statistics.median(xs)


def _paired(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[i] / den[i]`` (both timed back to back in round ``i``)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    """CPU model, cores, RAM and current load average (1/5/15 min)."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
        with open("/proc/meminfo") as f:
            ram = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        ram = float("nan")
    return f"{model}, {os.cpu_count()} cores, {ram:.1f} GiB RAM, load {_load()}"


# ------------------------------------------------------------------------------ 1. pipeline
def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``(fn(), wall s, process CPU s)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _count(batches: Iterable[tuple[object, np.ndarray]]) -> int:
    """Examples in one full pass over ``batches``."""
    return sum(len(labels) for _, labels in batches)


def bench_pipeline(split: str, batch_size: int, repeats: int) -> list[Row]:
    tf_ds = avdigits.tf_pipeline(split, batch_size=batch_size)
    tf_feats, tf_y = next(iter(tf_ds))  # warm-up of both sides, and proof of the same features
    py_feats, py_y = next(avdigits.python_loader(split, batch_size=batch_size))
    np.testing.assert_array_equal(tf_y.numpy(), py_y)
    np.testing.assert_allclose(tf_feats["audio"].numpy(), py_feats["audio"], atol=5e-3)
    np.testing.assert_allclose(tf_feats["image"].numpy(), py_feats["image"], rtol=1e-5, atol=1e-5)
    _count(tf_ds)  # first full pass: graph tracing, thread pools
    wall: dict[str, list[float]] = {"tf.data": [], "python": [], "setup": []}
    cpu: dict[str, list[float]] = {"tf.data": [], "python": [], "setup": []}
    n = 0
    for _ in tqdm(range(repeats), desc=f"pipeline ({split})", unit="round"):
        n, seconds, used = _timed(lambda: _count(tf_ds))
        wall["tf.data"].append(seconds)
        cpu["tf.data"].append(used)
        _, setup, setup_cpu = _timed(lambda: next(avdigits.python_loader(split, batch_size=1)))
        n, seconds, used = _timed(
            lambda: _count(avdigits.python_loader(split, batch_size=batch_size))
        )
        wall["setup"].append(setup)
        cpu["setup"].append(setup_cpu)
        wall["python"].append(seconds - setup)
        cpu["python"].append(used - setup_cpu)
    (tf_best, tf_med), (py_best, py_med) = _stats(wall["tf.data"]), _stats(wall["python"])
    ratio = _paired(wall["python"], wall["tf.data"])
    return [
        Row(
            "pipeline examples/s (tf.data / python)",
            f"{n / tf_med:.0f} (best {n / tf_best:.0f})",
            f"{n / py_med:.0f} (best {n / py_best:.0f})",
            ratio,
            py_best / tf_best,
            ">= 5x",
            ratio >= 5,
            f"{n} examples/pass; CPU s/pass median: tf.data {statistics.median(cpu['tf.data']):.2f}"
            f", python {statistics.median(cpu['python']):.2f}; python setup subtracted: median "
            f"{statistics.median(wall['setup']):.3f} s",
        )
    ]


# ------------------------------------------------------------------------------ 2. training
def _model() -> keras.Model:
    audio = keras.Input((63, 40), name="audio")
    image = keras.Input((28, 28, 1), name="image")
    joint = keras.layers.Concatenate()(
        [SpectrogramEncoder(64)(audio)["pooled"], ImageEncoder(64)(image)["pooled"]])
    probs = keras.layers.Dense(10, activation="softmax")(joint)
    model = keras.Model({"audio": audio, "image": image}, probs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


class _EpochTimer(keras.callbacks.Callback):
    """Wall and process-CPU seconds of the last epoch (iterator creation and all steps)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.wall = time.perf_counter() - self.start[0]
        self.cpu = time.process_time() - self.start[1]


def _input_wait(model: keras.Model, ds: tf.data.Dataset) -> float:
    """Fraction of one ``train_on_batch`` epoch spent blocked in ``next()`` on ``ds``."""
    batches, waited, start = iter(ds), 0.0, time.perf_counter()
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - asked
        if batch is None:
            return waited / (time.perf_counter() - start)
        model.train_on_batch(*batch)


def bench_training(split: str, batch_size: int, epochs: int) -> list[Row]:
    keras.utils.set_random_seed(0)
    pipeline = avdigits.tf_pipeline(split, batch_size=batch_size)
    feats, labels = {"audio": [], "image": []}, []
    for f, y in pipeline:
        for key in feats:
            feats[key].append(f[key].numpy())
        labels.append(y.numpy())
    arrays = {k: np.concatenate(v) for k, v in feats.items()}
    memory = (
        tf.data.Dataset.from_tensor_slices((arrays, np.concatenate(labels)))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    inputs = {"tf_pipeline": pipeline, "in-memory": memory}
    model, timer = _model(), _EpochTimer()
    for ds in inputs.values():  # warm-up: traces the train step
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
    wall: dict[str, list[float]] = {k: [] for k in inputs}
    cpu: dict[str, list[float]] = {k: [] for k in inputs}
    for _ in tqdm(range(epochs), desc=f"training ({split})", unit="round"):
        for name, ds in inputs.items():
            model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
            wall[name].append(timer.wall)
            cpu[name].append(timer.cpu)
    _input_wait(model, memory)  # warm-up: traces train_on_batch for both batch shapes
    wait = {name: statistics.median(_input_wait(model, ds) for _ in range(3))
            for name, ds in inputs.items()}
    (best, med), (mem_best, mem_med) = _stats(wall["tf_pipeline"]), _stats(wall["in-memory"])
    ratio = _paired(wall["tf_pipeline"], wall["in-memory"])
    return [
        Row(
            "training epoch s (tf_pipeline / in-memory)",
            f"{med:.3f} (best {best:.3f})",
            f"{mem_med:.3f} (best {mem_best:.3f})",
            ratio,
            best / mem_best,
            "<= 1.1",
            ratio <= 1.1,
            f"{arrays['audio'].shape[0]} examples/epoch; CPU s/epoch median: tf_pipeline "
            f"{statistics.median(cpu['tf_pipeline']):.2f}, in-memory "
            f"{statistics.median(cpu['in-memory']):.2f} (ratio of rounds "
            f"{_paired(cpu['tf_pipeline'], cpu['in-memory']):.2f}); trainer blocked on the "
            f"next batch: tf_pipeline {wait['tf_pipeline']:.1%}, in-memory "
            f"{wait['in-memory']:.1%} of an epoch",
        )
    ]


# --------------------------------------------------------------------------------- 3. align
def _stream(rng: np.random.Generator, n: int, start: int) -> np.ndarray:
    return start + np.cumsum(rng.integers(5 * MS, 15 * MS + 1, n))


def bench_align(n: int, repeats: int) -> list[Row]:
    rng = np.random.default_rng(0)
    base = 1_700_000_000_000_000_000
    t, ref = _stream(rng, n, base), _stream(rng, n, base + 3 * MS)
    x = rng.normal(size=(n, 3))
    right = pd.DataFrame({"t": t, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2]})
    left = pd.DataFrame({"t": ref})
    cases = [("nearest", "nearest", 5 * MS), ("previous", "backward", None),
             ("previous", "backward", 10 * MS)]
    rows = []
    for method, direction, tol in cases:
        label = f"{method}, tolerance {'none' if tol is None else f'{tol // MS} ms'}"

        def ours(method: str = method, tol: int | None = tol) -> Aligned:
            return align(t, x, ref, method, tolerance=tol)

        def theirs(direction: str = direction, tol: int | None = tol) -> pd.DataFrame:
            return pd.merge_asof(left, right, on="t", direction=direction, tolerance=tol)

        got, want = ours(), theirs()[["x0", "x1", "x2"]].to_numpy()
        np.testing.assert_array_equal(got.values, want)
        np.testing.assert_array_equal(got.mask, ~np.isnan(want).any(axis=1))
        del want
        times: dict[str, list[float]] = {"align": [], "pandas": []}
        for _ in tqdm(range(repeats), desc=f"align ({label})", unit="round"):
            for name, fn in (("align", ours), ("pandas", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        (a_best, a_med), (p_best, p_med) = _stats(times["align"]), _stats(times["pandas"])
        ratio = _paired(times["pandas"], times["align"])
        rows.append(
            Row(
                f"align {label}: samples/s (align / pandas)",
                f"{n / a_med / 1e6:.1f}M (best {n / a_best / 1e6:.1f}M)",
                f"{n / p_med / 1e6:.1f}M (best {n / p_best / 1e6:.1f}M)",
                ratio,
                p_best / a_best,
                ">= 1x",
                ratio >= 1,
                f"{n:,} samples onto {n:,} steps, {got.mask.mean():.0%} matched; median s: "
                f"align {a_med:.3f}, pandas {p_med:.3f}",
            )
        )
    return rows


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Needs MMKERAS_DATA_DIR (fsdd/, mnist/) for the pipeline and training sections.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which benchmarks to run")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train",
                        help="avdigits split for the pipeline and training sections")
    parser.add_argument("--batch-size", type=int, default=64, help="same for every side")
    parser.add_argument("--repeats", type=int, default=9,
                        help="timed passes per side (pipeline section)")
    parser.add_argument("--epochs", type=int, default=12,
                        help="steady-state epochs per input (training section)")
    parser.add_argument("--align-samples", type=int, default=10_000_000,
                        help="samples in the stream and steps in the reference")
    parser.add_argument("--align-repeats", type=int, default=7,
                        help="timed calls per side and case (align section)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"machine: {machine()}")
    print(f"numpy {np.__version__}, pandas {pd.__version__}, tensorflow {tf.__version__}, "
          f"keras {keras.__version__}")
    rows: list[Row] = []
    loads = []
    runners = {
        "pipeline": lambda: bench_pipeline(args.split, args.batch_size, args.repeats),
        "training": lambda: bench_training(args.split, args.batch_size, args.epochs),
        "align": lambda: bench_align(args.align_samples, args.align_repeats),
    }
    for section in SECTIONS:
        if section in args.sections:
            start = time.perf_counter()
            rows += runners[section]()
            loads.append(f"{section}: {time.perf_counter() - start:.0f} s, load after {_load()}")
    print("\n" + "\n".join(loads))
    print("\n| metric | ours: median (best) | baseline: median (best) | ratio (median of "
          "rounds) | ratio of bests | goal | met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.metric} | {r.ours} | {r.baseline} | {r.ratio_rounds:.2f} | "
              f"{r.ratio_best:.2f} | {r.goal} | {'yes' if r.met else 'NO'} |")
    print()
    for r in rows:
        print(f"- {r.metric}: {r.note}")


if __name__ == "__main__":
    main()
