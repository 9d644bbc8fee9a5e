"""Training-loop benchmark: mmkeras's loops against a minimal ``model.fit``, replicas, input waits.

One run on the embedded ``machine`` dataset at a small size (16 machines, 30 s runs), the
``build_models`` defaults (``concat`` fusion, default encoders), AdamW, global batch 64, no
validation (training epochs only). Every side trains its own copy of the same model (same
seed); epochs are interleaved round by round so load changes hit all sides alike; the first
epoch of each side (tracing, the feature cache) is reported apart and left out of the steady
state.

``loop``
    Examples/s of training epochs, three sides:
    ``minimal fit``: ``model.fit`` on the preprocessed features held in memory
    (``from_tensor_slices``), default strategy, no callbacks;
    ``minimal fit, mirrored``: the same under a one-replica ``MirroredStrategy``;
    ``trainer fit``: what ``mmkeras.train`` runs for ``strategy=mirrored``: the strategy of
    ``get_strategy("mirrored")`` (on a one-device machine the default strategy), the trainer's
    ``feature_dataset`` (cached, shuffled every epoch), its ``NonFiniteLoss`` and ``EpochStats``
    callbacks (not its per-epoch backup writes);
    ``fit_custom``: ``mmkeras.training.loop.fit_custom`` (the ``multi_worker`` loop) on the
    same strategy and dataset. Overhead = minimal examples/s / side examples/s - 1 (goal <= 5%).
``input``
    Share of each ``fit_custom`` epoch spent blocked in ``next(iterator)``, in-memory
    (``from_tensor_slices``) and pipeline-fed (``feature_dataset``) (goal <= 5%).
``replicas``
    Time per step with 1 and 2 replicas (the CPU split into 2 logical devices, in a
    subprocess), same global batch, Keras ``fit`` (the trainer's mirrored path) and
    ``fit_custom``. On a CPU both replicas share the same cores: this measures the overhead
    of distribution, not a speed-up.

Run from the repository root::

    TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/bench_train.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

DATA = {"n_machines": 16, "runs_per_machine": 2, "duration_s": 30.0, "progress": False}
BATCH = 64


def load():
    """The small machine dataset and its fitted preprocessing state."""
    from data_pipelines.machine import load as load_machine
    from mmkeras.data.preprocessing import fit_preprocessing

    dataset = load_machine(**DATA)
    return dataset, fit_preprocessing(dataset, "train")


def build(strategy: tf.distribute.Strategy, dataset, state):
    """The ``build_models`` default model compiled as the trainer compiles it (seed 0)."""
    from mmkeras.models import build_models

    keras.utils.set_random_seed(0)
    with strategy.scope():
        pre, task = build_models(dataset.modalities, state, len(dataset.class_names), seed=0)
        losses, weights = task.losses_and_weights()
        model = task.training_model()
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=losses, loss_weights=weights,
                      metrics={"probabilities": [
                          keras.metrics.SparseCategoricalAccuracy("accuracy")]})
    return pre, model


def pipeline(pre, dataset, batch: int) -> tf.data.Dataset:
    """The trainer's training input: ``feature_dataset`` (cached, shuffled each epoch)."""
    from mmkeras.training.trainer import feature_dataset

    return feature_dataset(pre, dataset, "train", batch, None, shuffle=True, seed=0)


def in_memory(pre, dataset, batch: int) -> tf.data.Dataset:
    """The same features materialised once, fed from memory."""
    from mmkeras.training.trainer import feature_dataset

    feats = list(feature_dataset(pre, dataset, "train", batch, None).unbatch())
    arrays = tf.nest.map_structure(lambda *xs: np.stack([x.numpy() for x in xs]), *feats)
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch).prefetch(tf.data.AUTOTUNE)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch of a Keras ``fit`` (on_epoch_begin to on_epoch_end)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def fit_epoch(model, data, callbacks) -> float:
    """One Keras ``fit`` epoch; its seconds."""
    timer = EpochTimer()
    model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[*callbacks, timer])
    return timer.seconds[0]


def custom_epoch(model, data, strategy):
    """One ``fit_custom`` epoch; its :class:`~mmkeras.training.loop.EpochTiming`."""
    from mmkeras.training.loop import fit_custom

    return fit_custom(model, data, epochs=1, strategy=strategy).timing[0]


def loop_and_input(rounds: int) -> dict:
    """Sections ``loop`` and ``input`` (one process, one replica)."""
    from mmkeras.training.callbacks import EpochStats, NonFiniteLoss
    from mmkeras.training.strategy import get_strategy

    dataset, state = load()
    n = dataset.num_examples("train")
    mirrored = get_strategy("mirrored")
    default = tf.distribute.get_strategy()
    pre, minimal = build(default, dataset, state)
    memory = in_memory(pre, dataset, BATCH)
    _, minimal_mirrored = build(tf.distribute.MirroredStrategy(["/cpu:0"]), dataset, state)
    _, trainer = build(mirrored, dataset, state)
    _, custom = build(mirrored, dataset, state)
    _, custom_mem = build(mirrored, dataset, state)
    fed = pipeline(pre, dataset, BATCH)
    fed_custom = pipeline(pre, dataset, BATCH)
    sides = {
        "minimal fit": lambda: fit_epoch(minimal, memory, []),
        "minimal fit, mirrored": lambda: fit_epoch(minimal_mirrored, memory, []),
        "trainer fit": lambda: fit_epoch(trainer, fed, [NonFiniteLoss(), EpochStats(n)]),
    }
    timings: dict[str, list] = {"fit_custom": [], "fit_custom in-memory": []}
    seconds: dict[str, list[float]] = {k: [] for k in [*sides, *timings]}
    for r in range(rounds + 1):
        for name, run in sides.items():
            seconds[name].append(run())
        for name, model, data in [("fit_custom", custom, fed_custom),
                                  ("fit_custom in-memory", custom_mem, memory)]:
            t = custom_epoch(model, data, mirrored)
            timings[name].append(t)
            seconds[name].append(t.seconds)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()),
              flush=True)
    return {"train_examples": n, "seconds": seconds,
            "input": {k: [t.input_fraction for t in v] for k, v in timings.items()}}


def replicas_child(out: str, rounds: int) -> None:
    """Section ``replicas``, run in a subprocess that splits the CPU into 2 devices."""
    from mmkeras.training.strategy import split_cpu

    split_cpu(2)
    dataset, state = load()
    result: dict[str, list[float]] = {}
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        pre, fit_model = build(strategy, dataset, state)
        _, custom = build(strategy, dataset, state)
        data = in_memory(pre, dataset, BATCH)
        steps = int(data.cardinality())
        fit_s, custom_s = [], []
        for _ in range(rounds + 1):
            fit_s.append(fit_epoch(fit_model, data, []) / steps)
            custom_s.append(custom_epoch(custom, data, strategy).seconds / steps)
        result[f"fit {len(devices)}"] = fit_s
        result[f"fit_custom {len(devices)}"] = custom_s
    Path(out).write_text(json.dumps(result))


def steady(xs: list[float]) -> float:
    """Median after the first (warm-up) value."""
    return statistics.median(xs[1:])


def paired(num: list[float], den: list[float]) -> float:
    """Median over rounds (warm-up excluded) of ``num[i] / den[i]``."""
    return statistics.median(a / b for a, b in zip(num[1:], den[1:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per side")
    parser.add_argument("--replicas-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replicas_child:
        replicas_child(args.replicas_child, args.rounds)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}  {platform.node()}  {os.cpu_count()} CPUs  "
          f"load {os.getloadavg()[0]:.2f}  TF {tf.__version__}  Keras {keras.__version__}")
    loop = loop_and_input(args.rounds)
    out = Path(f"/tmp/bench_train_replicas_{os.getpid()}.json")
    subprocess.run([sys.executable, __file__, "--replicas-child", str(out),
                    "--rounds", str(args.rounds)], check=True, timeout=3600)
    reps = json.loads(out.read_text())
    out.unlink()

    n, secs = loop["train_examples"], loop["seconds"]
    print(f"\n## loop: examples/s, {n} training examples, global batch {BATCH}, "
          f"{args.rounds} timed epochs after 1 warm-up")
    print(f"{'side':<22}{'first epoch':>14}{'steady ex/s':>14}{'overhead':>10}  goal <= 5%")
    base = secs["minimal fit"]
    for name, xs in secs.items():
        over = paired(xs, base) - 1
        print(f"{name:<22}{n / xs[0]:>14.0f}{n / steady(xs):>14.0f}{over:>+10.1%}"
              + ("" if name == "minimal fit" else "  met" if over <= 0.05 else "  missed"))
    print("\n## input: share of each fit_custom epoch blocked in next(iterator), goal <= 5%")
    for name, fracs in loop["input"].items():
        print(f"{name:<22} first epoch {fracs[0]:.1%}   steady median {steady(fracs):.1%}  "
              f"max {max(fracs[1:]):.1%}")
    print("\n## replicas: seconds per step, same global batch (2 = CPU split in 2 devices)")
    for loop_name in ("fit", "fit_custom"):
        one, two = reps[f"{loop_name} 1"], reps[f"{loop_name} 2"]
        print(f"{loop_name:<12} 1 replica {steady(one) * 1e3:7.1f} ms   2 replicas "
              f"{steady(two) * 1e3:7.1f} ms   ratio {paired(two, one):.2f}")
    print(f"\nload at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
