"""Fusion benchmark: every modality alone and every registered fusion, over seeds (and folds).

Each run is a real job of :func:`mmkeras.training.trainer.train` (the ``python -m mmkeras.train``
trainer: its config file plus ``key=value`` overrides, early stopping on validation loss,
evaluation report, export). Per model it reports the mean and standard deviation over runs of
test accuracy and macro-F1, the validation loss and accuracy of the kept epoch (the selection
criterion: the fusion with the lowest mean validation loss is marked, test numbers never
choose), the parameter count, training time (sum of epoch times, validation included), and
inference latency per example (batch 64 and batch 1, ``model.predict`` on the raw-input model).
A second table gives each fusion's test accuracy with each modality marked absent through the
presence inputs (the run's ``evaluation.json``).

``--folds`` runs each seed on several ``dataset_args.fold`` values (MobiFall leave-one-subject-
out; ``--fold-key val_fold`` for machine's validation folds); means and standard deviations are
then over every (fold, seed) run. ``--val-only`` runs the training stage alone (no evaluation,
no export) and tables the kept epoch's validation loss and accuracy: choosing settings by
cross-validation without reading the test split.

Finished runs are appended to the ``.runs.jsonl`` file beside ``--out`` (``fusion.md`` ->
``fusion.runs.jsonl``) and reused when the same command is run again, so a long benchmark can
be stopped and continued; a record torn by a kill while it was being written (the log's last
line) is reported, cut off and its run redone. ``--cached-only`` trains nothing and tables the
finished runs (the ``runs`` column says how many each model has). A fusion whose model cannot
be built with the config (``early_timeline`` on images; an early or late fusion when the config
trains unimodal heads) is listed under "Not run" with the reason, and the other runs go on.

Usage:
    python benchmarks/bench_fusion.py --dataset machine --seeds 3 --out benchmarks/fusion_machine.md
    python benchmarks/bench_fusion.py --dataset machine --seeds 1 --epochs 2 --fusions sum,early \\
        --modalities audio --out /tmp/b.md
    python benchmarks/bench_fusion.py --dataset mobifall --folds 0-8 --seeds 1 \\
        --config data_pipelines/configs/mobifall_loso.yaml --out /tmp/mobifall.md
    python benchmarks/bench_fusion.py --dataset machine --folds 0-3 --fold-key val_fold \\
        --seeds 1 --fusions sum --modalities none --val-only --out /tmp/cv.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_pipelines import available, load_dataset  # noqa: E402
from mmkeras.config import DEFAULT_FUSION, ConfigError, resolve_config  # noqa: E402

CONFIGS = ROOT / "data_pipelines" / "configs"
LATENCY_EXAMPLES = 32


def _ints(text: str) -> list[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="machine", choices=available(),
                   help="a data_pipelines dataset (default machine)")
    p.add_argument("--config", help="YAML config (default: data_pipelines/configs/<dataset>.yaml)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model (default 3)")
    p.add_argument("--fusions", default="all",
                   help="comma-separated registered fusions, 'all' or 'none' (default all)")
    p.add_argument("--modalities", default="all",
                   help="modalities trained alone: comma-separated, 'all' or 'none'")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    p.add_argument("--folds", help="dataset_args.fold values, e.g. 0-8 (MobiFall LOSO)")
    p.add_argument("--fold-key", default="fold",
                   help="dataset_args key --folds sets (default fold; machine: val_fold)")
    p.add_argument("--val-only", action="store_true",
                   help="train only; table validation loss and accuracy (test never read)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--work", help="folder for the run folders (default: a temporary one)")
    p.add_argument("--out", default="fusion_benchmark.md", help="markdown table to write")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: summarise the matching runs of the .runs.jsonl file "
                        "beside --out (fusion.md -> fusion.runs.jsonl)")
    return p.parse_args(argv)


def _fusions(spec: str) -> list[str]:
    import mmkeras.fusion  # noqa: F401  (fills the registry)
    from mmkeras.registry import FUSIONS

    if spec == "all":
        return FUSIONS.names()
    if spec == "none":
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        FUSIONS.get(name)  # unknown names fail with the closest registered one
    return names


def _fusion_spec(configured: str | dict, name: str) -> str:
    """The override for fusion ``name``: the config's own arguments when it names that fusion
    (``{name: early_timeline, encoder: conv1d}``), else the bare name (the defaults)."""
    if isinstance(configured, dict) and configured.get("name") == name:
        return json.dumps(configured)
    return name


def _variants(args: argparse.Namespace, modalities: list[str]) -> list[tuple[str, str]]:
    """``[(kind, name)]``: ``("alone", modality)`` and ``("fusion", fusion)``."""
    if args.modalities == "all":
        alone = modalities
    elif args.modalities == "none":
        alone = []
    else:
        alone = [m.strip() for m in args.modalities.split(",") if m.strip()]
        unknown = sorted(set(alone) - set(modalities))
        if unknown:
            raise SystemExit(f"error: --modalities {unknown} not in the dataset's {modalities}")
    return [("alone", m) for m in alone] + [("fusion", f) for f in _fusions(args.fusions)]


def _latency(model: Any, inputs: dict[str, np.ndarray]) -> tuple[float, float]:
    """Seconds per example of ``model.predict`` at batch 64 (whole split) and batch 1."""
    from mmkeras.evaluation.predict import predict

    small = {k: v[:LATENCY_EXAMPLES] for k, v in inputs.items()}
    predict(model, small, batch_size=64)  # trace once
    n = len(next(iter(inputs.values())))
    t0 = time.perf_counter()
    predict(model, inputs, batch_size=64)
    batch64 = (time.perf_counter() - t0) / n
    predict(model, {k: v[:2] for k, v in small.items()}, batch_size=1)
    m = len(next(iter(small.values())))
    t0 = time.perf_counter()
    predict(model, small, batch_size=1)
    return batch64, (time.perf_counter() - t0) / m


def run_one(config: str | None, overrides: list[str], dataset: Any, work: Path) -> dict:
    """Train one model with the real trainer and collect its numbers."""
    from mmkeras.training.callbacks import read_history_csv
    from mmkeras.training.trainer import train

    cfg = resolve_config(config, [*overrides, f"output={work}", "verbose=0"])
    t0 = time.perf_counter()
    result = train(cfg, dataset=dataset, overwrite=True)
    job_s = time.perf_counter() - t0
    history = read_history_csv(result.run_dir / "history.csv")
    val_loss, val_accuracy = _kept_epoch(history, cfg.early_stopping)
    n_train = result.metrics["train_examples"]
    train_s = float(sum(n_train / v for v in history["examples_per_second"]))
    evaluation = json.loads((result.run_dir / "evaluation.json").read_text())
    selected = dataset.select(cfg.modalities)
    inputs = {m: selected.splits["test"][m] for m in selected.modalities}
    batch64, batch1 = _latency(result.model, inputs)
    return {
        "accuracy": result.metrics["accuracy"],
        "macro_f1": result.metrics["macro_f1"],
        "per_class_f1": {k: v["f1"] for k, v in result.metrics["per_class"].items()},
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "epochs_run": len(history["val_loss"]),
        "params": int(result.model.count_params()),
        "train_s": train_s,
        "job_s": job_s,
        "latency_ms_b64": 1e3 * batch64,
        "latency_ms_b1": 1e3 * batch1,
        "absent": {m: v["accuracy"] for m, v in
                   evaluation["contribution"]["absent"].items()} if len(inputs) > 1 else {},
        "modalities": list(selected.modalities),
    }


def _kept_epoch(history: dict[str, list[float]], early_stopping: int) -> tuple[float, float]:
    """Validation loss and accuracy of the fused head at the epoch the trainer kept (lowest
    total validation loss with early stopping, else the last): with unimodal heads the
    outputs are named, and the total loss also counts the heads' losses."""
    best = int(np.argmin(history["val_loss"])) if early_stopping else len(history["val_loss"]) - 1
    loss = history.get("val_probabilities_loss", history["val_loss"])[best]
    accuracy = history.get("val_probabilities_accuracy", history.get("val_accuracy"))
    return float(loss), float(accuracy[best]) if accuracy else float("nan")


def run_val(config: str | None, overrides: list[str], dataset: Any, work: Path) -> dict:
    """Train one model (the trainer's training stage alone) and collect its validation numbers.

    Nothing is evaluated or exported, and the test split is not read.
    """
    import keras

    from mmkeras.training.strategy import get_strategy
    from mmkeras.training.trainer import _fit

    cfg = resolve_config(config, [*overrides, "verbose=0"])
    strategy = get_strategy(cfg.strategy)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.perf_counter()
    model, history = _fit(cfg, dataset.select(cfg.modalities), strategy, work, chief=True)
    val_loss, val_accuracy = _kept_epoch(history, cfg.early_stopping)
    return {
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "epochs_run": len(history["val_loss"]),
        "params": int(model.count_params()),
        "job_s": time.perf_counter() - t0,
    }


def val_markdown(records: list[dict], header: str) -> str:
    """Validation-only table: per model, mean ± std over runs and every run's numbers."""
    lines = [header, "", "| model | runs | val loss | val accuracy | epochs | s per run | "
             "per run (fold/seed: val loss, val acc) |", "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["kind"], r["name"]) for r in records):
        runs = [r for r in records if (r["kind"], r["name"]) == key]
        loss, loss_sd = _mean_std([r["val_loss"] for r in runs])
        acc, acc_sd = _mean_std([r["val_accuracy"] for r in runs])
        name = f"{key[1]} alone" if key[0] == "alone" else key[1]
        each = ", ".join(f"{r['fold']}/{r['seed']}: {r['val_loss']:.4f} {r['val_accuracy']:.3f}"
                         for r in runs)
        lines.append(f"| {name} | {len(runs)} | {loss:.4f} ± {loss_sd:.4f} | {acc:.3f} ± "
                     f"{acc_sd:.3f} | {np.mean([r['epochs_run'] for r in runs]):.1f} | "
                     f"{np.mean([r['job_s'] for r in runs]):.0f} | {each} |")
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(records: list[dict]) -> list[dict]:
    """One row per model: means and standard deviations over its runs."""
    rows = []
    for key in dict.fromkeys((r["kind"], r["name"]) for r in records):
        runs = [r for r in records if (r["kind"], r["name"]) == key]
        row: dict[str, Any] = {"kind": key[0], "name": key[1], "runs": len(runs)}
        for field in ("accuracy", "macro_f1", "val_loss", "val_accuracy", "train_s",
                      "latency_ms_b64", "latency_ms_b1", "epochs_run"):
            row[field], row[field + "_std"] = _mean_std([r[field] for r in runs])
        row["params"] = runs[0]["params"]
        row["absent"] = {m: _mean_std([r["absent"][m] for r in runs])[0]
                         for m in runs[0]["absent"]}
        classes = runs[0]["per_class_f1"]
        row["per_class_f1"] = {c: _mean_std([r["per_class_f1"][c] for r in runs])[0]
                               for c in classes}
        rows.append(row)
    return rows


def markdown(rows: list[dict], header: str) -> str:
    """The benchmark tables and a summary as markdown."""
    def pm(row: dict, field: str, digits: int = 3) -> str:
        return f"{row[field]:.{digits}f} ± {row[field + '_std']:.{digits}f}"

    fusions = [r for r in rows if r["kind"] == "fusion"]
    chosen = min(fusions, key=lambda r: r["val_loss"])["name"] if fusions else None
    lines = [header, "",
             "| model | runs | test accuracy | macro-F1 | val loss | val accuracy | params | "
             "train s | ms/example (batch 64) | ms/example (batch 1) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"{r['name']} alone" if r["kind"] == "alone" else r["name"]
        if r["name"] == chosen and r["kind"] == "fusion":
            name += " (lowest val loss)"
        if r["name"] == DEFAULT_FUSION and r["kind"] == "fusion":
            name += " (default)"
        lines.append(
            f"| {name} | {r['runs']} | {pm(r, 'accuracy')} | {pm(r, 'macro_f1')} | "
            f"{pm(r, 'val_loss')} | {pm(r, 'val_accuracy')} | {r['params']:,} | "
            f"{r['train_s']:.1f} | {r['latency_ms_b64']:.3f} | {r['latency_ms_b1']:.2f} |")
    if fusions:
        modalities = list(fusions[0]["absent"])
        lines += ["", "Missing modality (test accuracy, mean over runs, with the named modality "
                  "marked absent through its presence input):", "",
                  "| fusion | all present | " + " | ".join(f"{m} absent" for m in modalities)
                  + " |", "|---|---|" + "---|" * len(modalities)]
        for r in fusions:
            lines.append(f"| {r['name']} | {r['accuracy']:.3f} | "
                         + " | ".join(f"{r['absent'][m]:.3f}" for m in modalities) + " |")
    classes = list(rows[0]["per_class_f1"]) if rows else []
    if rows:
        lines += ["", "Per-class F1 (mean over runs):", "",
                  "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for r in rows:
            name = f"{r['name']} alone" if r["kind"] == "alone" else r["name"]
            lines.append(f"| {name} | "
                         + " | ".join(f"{r['per_class_f1'][c]:.2f}" for c in classes) + " |")
    lines += ["", *summary_lines(rows, chosen)]
    return "\n".join(lines) + "\n"


def summary_lines(rows: list[dict], chosen: str | None) -> list[str]:
    """Best fusion vs best single modality, and the validation-selected fusion."""
    fusions = [r for r in rows if r["kind"] == "fusion"]
    alone = [r for r in rows if r["kind"] == "alone"]
    out = []
    if fusions:
        best = max(fusions, key=lambda r: r["accuracy"])
        out.append(f"- best fusion on test: {best['name']} {best['accuracy']:.3f} "
                   f"± {best['accuracy_std']:.3f}")
        pick = next(r for r in fusions if r["name"] == chosen)
        out.append(f"- chosen on validation (lowest mean val loss): {chosen}, test "
                   f"{pick['accuracy']:.3f} ± {pick['accuracy_std']:.3f}")
    if alone:
        solo = max(alone, key=lambda r: r["accuracy"])
        out.append(f"- best modality alone: {solo['name']} {solo['accuracy']:.3f} "
                   f"± {solo['accuracy_std']:.3f}")
    if fusions and alone:
        out.append(f"- ratio best fusion / best alone: {best['accuracy'] / solo['accuracy']:.3f}; "
                   f"validation-chosen fusion / best alone: "
                   f"{pick['accuracy'] / solo['accuracy']:.3f}")
    return out


def read_log(log: Path) -> list[dict]:
    """The finished runs recorded in ``log`` (none if it does not exist).

    A last line that is not a record was torn by a kill mid-write: it is reported on stderr and
    cut off the file, so its run is redone. Any other bad line is an error naming it.
    """
    if not log.is_file():
        return []
    data = log.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    records, start = [], 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError("a JSON object with a 'key' expected")
        except ValueError as err:
            if number < len(lines):
                raise SystemExit(f"{log}:{number}: not a run record ({err}); delete that line "
                                 "(its run is then redone) or the file (every run is)") from None
            print(f"{log}:{number}: a torn record (the benchmark was killed while writing it) "
                  "is cut off; its run is redone", file=sys.stderr)
            os.truncate(log, start)
            return records
        records.append(record)
        start += len(line) + 1
    if records and not data.endswith(b"\n"):  # the last record lost only its newline
        with log.open("ab") as f:
            f.write(b"\n")
    return records


def append_log(log: Path, record: dict) -> None:
    """Append ``record`` to ``log`` as one line, on disk before the next run starts."""
    with log.open("ab") as f:
        f.write(json.dumps(record).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``--out`` (markdown) and its ``.runs.jsonl`` run log."""
    args = parse_args(argv)
    config = args.config or str(CONFIGS / f"{args.dataset}.yaml")
    base = [f"dataset={args.dataset}", *args.set]
    if args.epochs is not None:
        base.append(f"epochs={args.epochs}")
    folds = _ints(args.folds) if args.folds else [None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".runs.jsonl")
    done = read_log(log)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-fusion-"))
    records: list[dict] = []
    not_run: dict[str, str] = {}  # fusion -> why its model could not be built
    variants = None
    for fold in folds:
        fold_args = base + ([f"dataset_args.{args.fold_key}={fold}"] if fold is not None
                            else [])
        cfg = resolve_config(config, fold_args)
        dataset = None
        for seed in range(args.seeds):
            if dataset is None:
                dataset = load_dataset(cfg.dataset, strict=cfg.strict, **cfg.dataset_args)
                variants = variants or _variants(args, list(dataset.modalities))
            for kind, name in variants:
                extra = ([f"modalities=[{name}]"] if kind == "alone"
                         else [f"fusion={_fusion_spec(cfg.fusion, name)}"])
                overrides = fold_args + extra + [f"seed={seed}"]
                key = {"config": config, "overrides": overrides}
                if args.val_only:
                    key["val_only"] = True
                cached = next((r for r in done if r["key"] == key), None)
                if cached is None and (args.cached_only or name in not_run):
                    continue
                if cached is None:
                    tag = f"{kind}-{name}-f{fold}-s{seed}"
                    try:
                        rec = (run_val if args.val_only else run_one)(config, overrides,
                                                                      dataset, work / tag)
                    except ValueError as err:  # a fusion the config's model cannot be built with
                        if kind != "fusion":
                            raise
                        not_run[name] = str(err).splitlines()[0]
                        print(f"[{tag}] not run: {not_run[name]}", flush=True)
                        continue
                    rec.update(key=key, kind=kind, name=name, seed=seed, fold=fold)
                    append_log(log, rec)
                    done.append(rec)
                    cached = rec
                    test = ("" if args.val_only else
                            f"test acc {rec['accuracy']:.3f} f1 {rec['macro_f1']:.3f} ")
                    print(f"[{tag}] {test}val loss {rec['val_loss']:.4f} val acc "
                          f"{rec['val_accuracy']:.3f} ({rec['job_s']:.0f} s)", flush=True)
                records.append(cached)
    command = "python benchmarks/bench_fusion.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    folds_note = f", folds {args.folds}" if args.folds else ""
    header = (f"`{command}` ({stamp}; dataset {args.dataset}, config {Path(config).name}, "
              f"seeds 0-{args.seeds - 1}{folds_note}; mean ± std over runs)")
    text = (val_markdown(records, header) if args.val_only
            else markdown(summarize(records), header))
    if not_run:
        text += "\nNot run (the model cannot be built with this config):\n" + "".join(
            f"- {name}: {why}\n" for name, why in not_run.items())
    out.write_text(text)
    print(text)
    if not records or any(math.isnan(r["val_loss" if args.val_only else "accuracy"])
                          for r in records):
        return 1
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as err:  # a missing config file or a bad --set: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
