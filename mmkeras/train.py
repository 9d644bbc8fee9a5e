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

from mmkeras.cli import Parser, drop_chatter, native_stderr, one_line
from mmkeras.config import Config, ConfigError, config_yaml, resolve_config
from mmkeras.paths import EnvPathError, check_env

EPILOG = """\
overrides (key=value, values parsed as YAML):
  dataset=machine            dataset module in data_pipelines/ (machine, avdigits, mobifall,
                             prepared: shards from python -m mmkeras.prepare, with
                             dataset_args.path=DIR)
  dataset_args.n_machines=8  arguments of that dataset's load()
  fusion=sum                 a registered fusion (sum, concat, gated, attention, tensor, early,
                             late_mean, ...: see mmkeras.registry.FUSIONS); its arguments
                             as fusion.name=tensor fusion.dim=4
  encoders.audio=conv1d      encoder per modality (default: one per modality kind)
  tasks.label.type=classification tasks.label.loss_weight=1.0   tasks and their loss weights
  representation_penalty=0   beta of beta*||h||^2 added to the loss
  modalities=[audio]         train on a subset of modalities (default: all)
  epochs=20 batch_size=64 learning_rate=2e-3 seed=0 embed_dim=64
                             batch_size is per replica: global batch = batch_size x replicas
  lr_schedule=constant       constant | cosine (to 0 over all steps)
  lr_scale_with_replicas=false  true: learning_rate x replicas
  mixed_precision=none       none | mixed_float16 | mixed_bfloat16
  dropout=0.3 modality_dropout=0.3 weight_decay=0.01
  early_stopping=5           patience in epochs on validation loss, best weights kept; 0: off
  model_name=NAME model_version=1   export/<model_name>/<model_version>/ layout for TF Serving
  strategy=mirrored          mirrored (all local GPUs, else CPU) | multi_worker | default
  verbose=1                  0: quiet, 1: progress bar, 2: one line per epoch and
                             TensorFlow's C++ start-up messages
  strict=false               true: stop at the first bad record (same as --strict)

examples:
  python -m mmkeras.train
  python -m mmkeras.train fusion=late_mean epochs=5 --output runs/late
  python -m mmkeras.train --config my_run.yaml modalities=[audio,vibration]
  python -m mmkeras.train epochs=2 --strict --print-config
  python -m mmkeras.train --output runs/a epochs=5   # again after a crash: resumes runs/a

run folders: the same command with the same --output resumes a stopped run from its last
complete stage (mid-training: the last finished epoch); a finished or failed run folder, or one
started with a different config, is refused unless --overwrite is given.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options and ``key=value`` overrides, in any order."""
    parser = Parser(
        prog="python -m mmkeras.train",
        description="Train, evaluate and export a multimodal fusion model.",
        epilog=EPILOG,
    )
    parser.add_argument("--config", help="YAML file with config fields (see overrides below)")
    parser.add_argument("--output", help="run folder (default: runs/<name>-<timestamp>/)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad record instead of skipping and reporting it")
    parser.add_argument("--overwrite", action="store_true",
                        help="clear the --output run folder of a previous (finished, failed or "
                             "different) run first")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_intermixed_args(argv)


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
    """The command line; returns the exit status (0 ok, 1 data error or non-finite loss,
    2 usage, config or run-folder error, 130 interrupted by Ctrl-C)."""
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output={json.dumps(args.output)}")
    if args.strict:
        overrides.append("strict=true")
    startup: list[str] = []
    cfg: Config | None = None
    try:
        with native_stderr(startup):  # TensorFlow loads here (registries, dataset modules)
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs now, not mid-run
            check_env()
            cfg = resolve_config(args.config, overrides)
    except (ConfigError, EnvPathError) as err:
        print(one_line(err), file=sys.stderr)
        return 2
    finally:
        shown = startup if cfg is not None and cfg.verbose >= 2 else drop_chatter(startup)
        if shown:
            print("\n".join(shown), file=sys.stderr)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0

    from mmkeras.data.quarantine import DataError
    from mmkeras.serving.export import ExportError
    from mmkeras.training.callbacks import NonFiniteLossError
    from mmkeras.training.interrupt import catch_interrupts
    from mmkeras.training.runfiles import RunFolderError
    from mmkeras.training.trainer import train

    try:
        with catch_interrupts():
            result = train(cfg, overwrite=args.overwrite)
    except (RunFolderError, ConfigError) as err:  # ConfigError: a value the dataset refuses
        print(one_line(err), file=sys.stderr)
        return 2
    except (DataError, ConnectionError, NonFiniteLossError, ExportError) as err:
        print(one_line(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: every run file is whole, the folder resumes
        folder = cfg.output or f"its run folder under {cfg.runs_dir}/"
        print(f"interrupted: run it again with --output {folder} (same config) to resume from "
              "the last finished epoch or stage", file=sys.stderr)
        return 130
    if result.export_dir is None:
        print(f"worker done; the chief writes the run folder {result.run_dir}")
    else:
        print(summary(cfg, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
