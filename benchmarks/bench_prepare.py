"""Prepare and streaming training at scale (issue 10): the embedded ``machine`` dataset at
1x, 10x, 100x.

For each size ``k`` (``k x --machines`` machines, ``--runs`` runs each, ``--duration`` s per
run; 1x with the defaults is ``machine.load()``'s default size):

1. ``machine.generate`` writes the raw runs (cached; not timed against either path);
2. *write*: the runs become "your own data": one manifest row per run (``run_id``,
   ``machine_id``, ``condition``, ``vibration_path``, ``environment_path``) and per stream one
   ``.npy`` file of rows ``t, v_1 .. v_C`` (seconds since the run start on the reference
   clock: the logger's clock offset from ``runs.csv`` is subtracted);
3. *prepare*: ``python -m mmkeras.prepare`` in a subprocess, default runner (DirectRunner,
   2 worker processes, multi-process mode), with the schema written next to the manifest:
   vibration (3 channels, ``linear`` within 2.5 ms) and environment (2 channels, ``linear``
   within 2.5 s) aligned onto a 1 kHz timeline, 1 s windows every 1 s; split by machine with
   a fixed validation and test set (``split.assign``: the first ``--held-out`` machines each,
   the same machines at every size), every other machine in ``train``;
4. *in-memory*: the single-process path ``machine.load()`` (its own alignment and windows
   of all four modalities) and ``fit_preprocessing`` of vibration and environment on its
   training split, in a subprocess (sizes in ``--memory-sizes``);
5. *train*: ``python -m mmkeras.train dataset=prepared dataset_args.path=DIR epochs=1`` in a
   subprocess (the whole job: fit, evaluation, export); examples/s is the epoch's
   ``examples_per_second`` from the run's ``history.csv``.

Peak RSS of a subprocess is its ``ru_maxrss`` from ``os.wait4`` (the largest resident set of
that process and of the descendants it waited for) and, polled from ``/proc`` every 0.5 s, the
peak of the summed resident sets of its whole process tree (Beam's launcher and workers).
``--distinct N`` generates ``N`` machines once for every size (generation is slow and not what
is measured): a smaller size takes the first machines, a larger one is topped up with copies
of the generated training machines' runs under new machine ids (never of the validation and
test machines): every row is still read, aligned, windowed, serialised and written.

The table reports times, the prepared/in-memory ratio, seconds per 1x unit (how prepare time
grows with size) and the training peak RSS against ``--budget-gb``.

Run from the repository root::

    python benchmarks/bench_prepare.py --sizes 1,10,100 --out /tmp/bench_prepare
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STREAMS = {"vibration": 3, "environment": 2}
SCHEMA = """\
# machine runs as your own recordings: one manifest row per run (written by bench_prepare.py)
name: machine_prepared
modalities:
  vibration: {{kind: stream, channels: 3, align: {{method: linear, tolerance: 0.0025}}}}
  environment: {{kind: stream, channels: 2, align: {{method: linear, tolerance: 2.5}}}}
label: {{column: condition, classes: [normal, bearing_wear, imbalance, overheating]}}
split:
  column: machine_id
  fractions: {{train: 1, val: 0, test: 0}}
  assign: {{val: {val}, test: {test}}}
timeline: {{rate_hz: 1000, time_unit: s}}
window: {{length_s: 1.0, hop_s: 1.0, min_presence: 0.8}}
"""
IN_MEMORY = """\
import json, resource, sys, time
from data_pipelines import machine
from mmkeras.data.preprocessing import fit_preprocessing
t0 = time.perf_counter()
ds = machine.load(cache_dir=sys.argv[1], n_machines=int(sys.argv[2]),
                  runs_per_machine=int(sys.argv[3]), duration_s=float(sys.argv[4]),
                  progress=False)
t1 = time.perf_counter()
fit_preprocessing(ds.select(["vibration", "environment"]))
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "fit_s": t2 - t1,
                  "examples": {s: int(len(a["label"])) for s, a in ds.splits.items()}}))
"""


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MiB) of process ``pid`` and all its descendants, from ``/proc``."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):  # exited, or a zombie without VmRSS
            continue
    return total / 1024


def run_child(cmd: list[str], log: Path, env: dict[str, str] | None = None
              ) -> tuple[float, float, float, int]:
    """Run ``cmd`` with stdout/stderr to ``log``; (wall seconds, peak RSS MiB of its largest
    process, peak RSS MiB of its whole process tree polled every 0.5 s, exit status)."""
    start = time.perf_counter()
    peak = [0.0]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env or os.environ.copy())
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, peak[0], proc.returncode


def write_manifest(raw: Path, folder: Path, n_machines: int, held: int) -> int:
    """One manifest row per run of the first ``n_machines`` machines of ``raw`` (a
    ``machine.generate`` folder) and its stream files under ``folder``; with fewer generated
    machines than ``n_machines``, the rows are
    topped up with copies of the generated training machines' runs (machine id
    ``<id>-c<k>``, same stream files; the first ``held`` machines, validation and test, are
    never copied). Returns the number of rows."""
    from data_pipelines import machine

    machines = sorted({row["machine_id"] for row in machine.read_index(raw)})[:n_machines]
    rows = [row for row in machine.read_index(raw) if row["machine_id"] in machines]
    (folder / "streams").mkdir(parents=True, exist_ok=True)
    with (folder / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "machine_id", "condition", *(f"{s}_path" for s in STREAMS)])
        written = []
        for row in rows:
            paths = []
            for stream in STREAMS:
                t_ns = np.load(raw / row["path"] / f"{stream}_t.npy")
                x = np.load(raw / row["path"] / f"{stream}_x.npy")
                t = (t_ns - int(row["start_ns"])) / 1e9 - float(row[f"offset_{stream}_s"])
                path = f"streams/{row['run_id']}_{stream}.npy"
                np.save(folder / path, np.column_stack([t, x.astype(np.float64)]))
                paths.append(path)
            writer.writerow([row["run_id"], row["machine_id"], row["label"], *paths])
            written.append((row, paths))
        sources = [(row, paths) for row, paths in written
                   if row["machine_id"] not in machines[:held]]
        runs_per_machine = len(rows) // len(machines)
        copies = (n_machines - len(machines)) * runs_per_machine
        for i in range(max(copies, 0)):
            row, paths = sources[i % len(sources)]
            k = 1 + i // len(sources)
            writer.writerow([f"{row['run_id']}-c{k}", f"{row['machine_id']}-c{k}",
                             row["label"], *paths])
    return len(rows) + max(copies, 0)


def history_rate(run_dir: Path) -> float:
    """The first epoch's ``examples_per_second`` of a run folder's ``history.csv``."""
    with (run_dir / "history.csv").open(newline="") as f:
        return float(next(csv.DictReader(f))["examples_per_second"])


def bench_size(k: int, args: argparse.Namespace, out: Path) -> dict:
    """Generate, write, prepare, load in memory and train one size; returns its record."""
    from data_pipelines import machine

    n_machines = k * args.machines
    record: dict = {"size": k, "machines": n_machines, "runs": n_machines * args.runs}
    say = lambda msg: print(f"[{k}x] {msg}", flush=True)  # noqa: E731
    t = time.perf_counter()
    generated = args.distinct or n_machines
    raw = machine.generate(args.cache, n_machines=generated, runs_per_machine=args.runs,
                           duration_s=args.duration, progress=False)
    record["distinct_runs"] = min(generated, n_machines) * args.runs
    say(f"raw runs of {generated} machines in {raw} ({time.perf_counter() - t:.0f} s)")

    folder = out / f"{k}x"
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    write_manifest(raw, folder / "data", n_machines, 2 * args.held_out)
    record["write_s"] = time.perf_counter() - t
    held = [f"m{i:03d}" for i in range(2 * args.held_out)]
    (folder / "data" / "schema.yaml").write_text(SCHEMA.format(
        val=json.dumps(held[: args.held_out]), test=json.dumps(held[args.held_out:])))
    record["raw_mb"] = sum(p.stat().st_size for p in (folder / "data/streams").iterdir()) / 2**20
    say(f"manifest + {record['raw_mb']:.0f} MiB of stream files in {record['write_s']:.0f} s")

    prepared = folder / "prepared"
    cmd = [sys.executable, "-m", "mmkeras.prepare", "--manifest",
           str(folder / "data/manifest.csv"), "--schema", str(folder / "data/schema.yaml"),
           "--out", str(prepared), *args.beam_args]
    say("prepare (DirectRunner, 2 worker processes) ...")
    seconds, rss, tree, rc = run_child(cmd, folder / "prepare.log")
    if rc:
        raise SystemExit(f"prepare failed ({rc}), see {folder / 'prepare.log'}")
    card = json.loads((prepared / "dataset.json").read_text())
    record.update(prepare_s=seconds, prepare_rss_mb=rss, prepare_tree_mb=tree,
                  examples=card["num_examples"],
                  prepared_mb=sum(p.stat().st_size for p in prepared.rglob("*.gz")) / 2**20)
    say(f"prepared {card['num_examples']} in {seconds:.0f} s, peak RSS {rss:.0f} MiB "
        f"(process tree {tree:.0f} MiB)")

    if k in args.memory_sizes:
        machine.generate(args.cache, n_machines=n_machines, runs_per_machine=args.runs,
                         duration_s=args.duration, progress=False)  # cached: not timed
        say("in-memory load() + fit_preprocessing ...")
        seconds, rss, _, rc = run_child(
            [sys.executable, "-c", IN_MEMORY, str(args.cache), str(n_machines), str(args.runs),
             str(args.duration)], folder / "memory.log")
        if rc:
            raise SystemExit(f"in-memory path failed ({rc}), see {folder / 'memory.log'}")
        result = json.loads((folder / "memory.log").read_text().strip().splitlines()[-1])
        record.update(memory_s=seconds, memory_rss_mb=rss, memory_load_s=result["load_s"],
                      memory_fit_s=result["fit_s"], memory_examples=result["examples"])
        say(f"in memory in {seconds:.0f} s, peak RSS {rss:.0f} MiB")

    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "mmkeras.train", "dataset=prepared",
           f"dataset_args.path={prepared}", "epochs=1", "verbose=2", "strategy=default",
           *args.train_args, "--output", str(run_dir)]
    say("train one epoch from the shards ...")
    seconds, rss, tree, rc = run_child(cmd, folder / "train.log")
    if rc:
        raise SystemExit(f"training failed ({rc}), see {folder / 'train.log'}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record.update(train_s=seconds, train_rss_mb=rss, train_tree_mb=tree,
                  train_rate=history_rate(run_dir),
                  test_accuracy=metrics["accuracy"])
    say(f"trained in {seconds:.0f} s ({record['train_rate']:.0f} examples/s), "
        f"peak RSS {rss:.0f} MiB")
    if not args.keep:
        shutil.rmtree(folder / "data")
        shutil.rmtree(prepared)
    return record


def table(records: list[dict], budget_mb: float) -> str:
    """The results as a Markdown table and a few summary lines."""
    base = records[0]
    lines = [
        "| size | runs (distinct) | train/val/test windows | write s | prepare s | "
        "prepare s per 1x | prepare RSS MiB: largest process / tree | in-memory s | "
        "prepared / in-memory | in-memory RSS MiB | train job s | train ex/s | "
        "train peak RSS MiB: largest process / tree | test acc |",
        "|" + "---|" * 14,
    ]
    for r in records:
        e = r["examples"]
        mem = r.get("memory_s")
        ratio = f"{r['prepare_s'] / mem:.2f}" if mem else "-"
        mem_rss = f"{r['memory_rss_mb']:.0f}" if mem else "-"
        lines.append(
            f"| {r['size']}x | {r['runs']} ({r.get('distinct_runs', r['runs'])}) | "
            f"{e['train']}/{e['val']}/{e['test']} | "
            f"{r['write_s']:.0f} | {r['prepare_s']:.0f} | {r['prepare_s'] / r['size']:.1f} | "
            f"{r['prepare_rss_mb']:.0f} / {r.get('prepare_tree_mb', 0):.0f} | "
            f"{f'{mem:.0f}' if mem else 'not run'} | {ratio} | {mem_rss} | {r['train_s']:.0f} | "
            f"{r['train_rate']:.0f} | {r['train_rss_mb']:.0f} / {r.get('train_tree_mb', 0):.0f} | "
            f"{r['test_accuracy']:.3f} |")
    last = records[-1]
    grow = last["train_rss_mb"] / base["train_rss_mb"]
    lines += [
        "",
        f"prepare time {last['size'] // base['size']}x the data: "
        f"x{last['prepare_s'] / base['prepare_s']:.1f} "
        f"({base['prepare_s'] / base['size']:.1f} -> {last['prepare_s'] / last['size']:.1f} "
        "s per 1x unit)",
        f"training peak RSS {base['train_rss_mb']:.0f} -> {last['train_rss_mb']:.0f} MiB "
        f"(x{grow:.2f}); budget {budget_mb:.0f} MiB: "
        f"{'within' if all(r['train_rss_mb'] <= budget_mb for r in records) else 'EXCEEDED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Beam options after --beam (e.g. --beam --direct_num_workers=2) and training "
               "overrides after --train (e.g. --train batch_size=128 embed_dim=16).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100",
                        help="comma-separated multiples of the 1x size (default 1,10,100)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_prepare"),
                        help="work folder: manifests, prepared shards, runs, results.json")
    parser.add_argument("--machines", type=int, default=64,
                        help="machines at 1x (default 64, machine.load()'s default)")
    parser.add_argument("--runs", type=int, default=2, help="runs per machine (default 2)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run (30)")
    parser.add_argument("--held-out", type=int, default=8,
                        help="machines in val and in test each, the same at every size (8)")
    parser.add_argument("--distinct", type=int, default=0,
                        help="generate at most this many machines; larger sizes list copies "
                             "of the generated training machines' runs under new machine ids "
                             "(default 0: generate every machine)")
    parser.add_argument("--memory-sizes", default=None,
                        help="sizes that also run the in-memory path (default: all)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="machine.generate cache folder (default: its usual cache)")
    parser.add_argument("--budget-gb", type=float, default=3.0,
                        help="training peak RSS budget (default 3)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each size's manifest data and shards")
    parser.add_argument("--beam", dest="beam_args", nargs=argparse.REMAINDER, default=[])
    parser.add_argument("--train", dest="train_args", nargs="*",
                        default=["batch_size=64", "embed_dim=32"])
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.memory_sizes = sizes if args.memory_sizes is None else [
        int(s) for s in args.memory_sizes.split(",") if s]
    if args.cache is None:
        from mmkeras.data.download import cache_root

        args.cache = cache_root()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"1x = {args.machines} machines x {args.runs} runs x {args.duration:g} s", flush=True)
    records = []
    for k in sizes:
        records.append(bench_size(k, args, args.out))
        (args.out / "results.json").write_text(json.dumps(records, indent=2))
    print(table(records, args.budget_gb * 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
