"""Command line: ``python -m mmkeras.train [--config FILE.yaml] [--output DIR] [key=value ...]``.

With no arguments it trains the intermediate-fusion model on the embedded ``machine`` dataset
(generated once into the cache) and writes a run folder under ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning chatter

from mmkeras.config import Config, resolve_config

EPILOG = """\
overrides (key=value, values parsed as YAML):
  dataset=machine            dataset module in data_pipelines/ (machine, avdigits, mobifall)
  dataset_args.n_machines=8  arguments of that dataset's load()
  fusion=intermediate        early | intermediate | late
  modalities=[audio]         train on a subset of modalities (default: all)
  epochs=20 batch_size=64 learning_rate=0.002 seed=0 embed_dim=64
  dropout=0.3 modality_dropout=0.3 weight_decay=0.01
  early_stopping=5           patience in epochs on validation loss, best weights kept; 0: off
  model_name=NAME model_version=1   export/<model_name>/<model_version>/ layout for TF Serving
  strategy=mirrored          mirrored (all local GPUs, else CPU) | multi_worker | default
  verbose=1                  1: progress bar, 2: one line per epoch
  strict=false               true: stop at the first bad record (same as --strict)

examples:
  python -m mmkeras.train
  python -m mmkeras.train fusion=late epochs=5 --output runs/late
  python -m mmkeras.train --config my_run.yaml modalities=[audio,vibration]
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.train",
        description="Train, evaluate and export a multimodal fusion model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with config fields (see overrides below)")
    parser.add_argument("--output", help="run folder (default: runs/<name>-<timestamp>/)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad record instead of skipping and reporting it")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def summary(cfg: Config, result) -> str:
    """The short report printed at the end of a run."""
    m = result.metrics
    lines = [
        f"dataset {cfg.dataset}, fusion {cfg.fusion}, modalities {m['modalities']}",
        f"test accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
        f"({m['num_examples']} test windows, {result.seconds:.0f} s)",
        f"run folder      {result.run_dir}",
    ]
    for name in ("config.yaml", "metrics.json", "history.csv", "model.keras",
                 "confusion_matrix.png", "export_validation.json"):
        lines.append(f"  {name:<24}{result.run_dir / name}")
    lines.append(f"  {'SavedModel':<24}{result.export_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = list(args.overrides)
        if args.output:
            overrides.append(f"output={json.dumps(args.output)}")
        if args.strict:
            overrides.append("strict=true")
        cfg = resolve_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from mmkeras.data.quarantine import BadRecordError
    from mmkeras.training.trainer import train

    try:
        result = train(cfg)
    except (BadRecordError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(cfg, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
