"""Serving benchmark: the exported signature against ``model.predict``, then the local server.

In one run, on the same real test examples (``examples.npz`` of the run):

``in-process``
    p50/p99 latency and throughput of the SavedModel's ``serving_default`` (loaded with
    ``tf.saved_model.load``) and of the Keras model's ``model.predict`` at batch 1 and 64.
    Goal: batch-1 p50 of the signature at least 10x lower than ``model.predict``'s.
``server``
    The same batches through ``python -m mmkeras.serve`` (a subprocess) with
    :class:`mmkeras.serving.client.ServingClient`, over REST (JSON) and gRPC.
``concurrent``
    8 client threads (half REST, half gRPC, batch 1) for 20 s: requests/s and errors (goal 0).

Run from the repository root::

    python benchmarks/bench_serving.py --run runs/<run>     # or without --run: trains a tiny run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from mmkeras.layers import load_model
from mmkeras.serving.client import ServingClient
from mmkeras.serving.export import export_run, load_run, versions
from mmkeras.serving.protocol import fill_missing_modalities
from mmkeras.serving.server import input_specs


def timings(fn, reps: int, warmup: int = 3) -> np.ndarray:
    """Seconds per call of ``fn`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.asarray(out)


def row(name: str, batch: int, seconds: np.ndarray) -> dict:
    return {"what": name, "batch": batch, "p50_ms": 1e3 * float(np.percentile(seconds, 50)),
            "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
            "examples_per_s": batch / float(np.mean(seconds)), "calls": len(seconds)}


def batch_of(examples: dict[str, np.ndarray], names: list[str], size: int) -> dict:
    n = len(examples[names[0]])
    index = np.arange(size) % n
    return {k: examples[k][index] for k in names}


def tiny_run(folder: Path) -> Path:
    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import train

    args = "{n_machines: 8, runs_per_machine: 2, duration_s: 14.0, progress: false}"
    train(resolve_config(None, ["epochs=1", f"dataset_args={args}", f"output={folder}",
                                "verbose=0"]))
    return folder


def start_server(base: Path, name: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "mmkeras.serve", "--model-base-path",
                             str(base), "--model-name", name, "--rest-port", "0", "--grpc-port",
                             "0", "--max-request-bytes", str(64 * 2**20)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the local server exited before it was ready")
    return proc, json.loads(line)


def concurrent(ready: dict, name: str, inputs: dict, clients: int, seconds: float) -> dict:
    counts = [0] * clients
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        protocol = "rest" if i % 2 == 0 else "grpc"
        with ServingClient("127.0.0.1", name, ready["rest_port"], ready["grpc_port"],
                           timeout=30, retries=0) as client:
            while time.monotonic() < stop:
                try:
                    client.predict(inputs, protocol=protocol)
                    counts[i] += 1
                except Exception as error:  # counted and reported: the goal is zero
                    errors.append(f"{protocol}: {error}"[:200])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": sum(counts),
            "requests_per_s": sum(counts) / elapsed, "errors": len(errors),
            "first_errors": errors[:3]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="finished run folder (default: train a tiny one)")
    parser.add_argument("--reps", type=int, default=200, help="timed calls at batch 1")
    parser.add_argument("--reps-large", type=int, default=30, help="timed calls at batch 64")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="concurrent test length")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    run_dir = Path(args.run) if args.run else tiny_run(scratch / "run")
    cfg, card, examples = load_run(run_dir)
    name = cfg["model_name"]
    base = scratch / "models"
    print(f"exporting {run_dir} to {base}", flush=True)
    export_dir = export_run(run_dir, base=base, log=lambda m: None)
    names = list(card["modalities"])
    model = load_model(run_dir / "model.keras")
    signature = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    results: dict = {"in_process": [], "server": [], "versions": versions(base / name)}

    for size, reps in ((1, args.reps), (64, args.reps_large)):
        raw = batch_of(examples, names, size)
        encoded = {k: v.astype(bytes).astype(object) if v.dtype.kind == "U" else v
                   for k, v in raw.items()}
        feed = fill_missing_modalities(encoded, input_specs(signature))  # presence flags = 1
        tensors = {k: tf.constant(v) for k, v in feed.items()}
        results["in_process"].append(row("signature", size, timings(
            lambda t=tensors: signature(**t), reps)))
        results["in_process"].append(row("model.predict", size, timings(
            lambda t=tensors: model.predict(t, verbose=0), reps)))
        print(results["in_process"][-2:], flush=True)

    proc, ready = start_server(base, name)
    try:
        with ServingClient("127.0.0.1", name, ready["rest_port"], ready["grpc_port"],
                           timeout=60) as client:
            for size, reps in ((1, args.reps), (64, args.reps_large)):
                raw = batch_of(examples, names, size)
                for protocol in ("rest", "grpc"):
                    results["server"].append(row(protocol, size, timings(
                        lambda r=raw, p=protocol: client.predict(r, protocol=p), reps)))
                    print(results["server"][-1], flush=True)
        results["concurrent"] = concurrent(ready, name, batch_of(examples, names, 1),
                                           args.clients, args.seconds)
    finally:
        proc.terminate()
        proc.wait(30)

    p50 = {(r["what"], r["batch"]): r["p50_ms"] for r in results["in_process"]}
    results["batch1_p50_speedup"] = p50[("model.predict", 1)] / p50[("signature", 1)]
    print("\n| where | what | batch | p50 ms | p99 ms | examples/s |\n|---|---|---|---|---|---|")
    for where in ("in_process", "server"):
        for r in results[where]:
            print(f"| {where} | {r['what']} | {r['batch']} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {r['examples_per_s']:.0f} |")
    c = results["concurrent"]
    print(f"\nbatch-1 p50: signature {results['batch1_p50_speedup']:.1f}x faster than "
          f"model.predict (goal >= 10x)")
    print(f"{c['clients']} concurrent clients for {c['seconds']} s: {c['requests']} requests "
          f"({c['requests_per_s']:.0f}/s), {c['errors']} errors {c['first_errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if c["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
