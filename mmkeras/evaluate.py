"""Command line: ``python -m mmkeras.evaluate --run DIR [--split test] [--levels 5] [--seed 0]``.

Evaluates a finished run folder (metrics, calibration, per-modality contribution, robustness)
and writes ``evaluation.json`` and PNG figures into it; the logic is in
:mod:`mmkeras.evaluation`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning chatter

from mmkeras.cli import Parser, one_line, positive_int

EPILOG = """\
what is measured (details in the mmkeras.evaluation module docstrings):
  accuracy, macro-F1, per-class precision/recall/F1, one-vs-rest ROC-AUC (classes absent from
  the split are listed and left out), top-label expected calibration error (15 equal-width
  confidence bins) with a reliability diagram, confusion matrix;
  per-modality contribution: accuracy with <modality>_present = 0 for every example, and the
  mean fusion weight per true class for fusions that return modality_weights;
  robustness: accuracy with one modality corrupted at 1..LEVELS (Gaussian noise from 20 dB to
  -5 dB SNR on audio and sensor streams, a growing occluding square on images, word dropout on
  text), relative robustness (area under the curve, level axis in [0, 1]) and effective
  robustness (MultiBench, against the chance model or --baseline).
  A prepared (sharded) dataset is never read whole: a seeded reservoir sample of --max-examples
  (default 2000) is drawn in one streamed pass; evaluation.json's "subset" says which.

examples:
  python -m mmkeras.evaluate --run runs/machine-20261123-101500
  python -m mmkeras.evaluate --run runs/X --split val --levels 3 --max-examples 200
  python -m mmkeras.evaluate --run runs/gated --baseline runs/late_mean
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = Parser(
        prog="python -m mmkeras.evaluate",
        description="Evaluate a finished run; write evaluation.json and PNG figures into it.",
        epilog=EPILOG,
    )
    parser.add_argument("--run", required=True, help="run folder written by mmkeras.train "
                        "(has config.yaml, dataset.json, model.keras)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--levels", type=positive_int, default=5,
                        help="corruption levels after the clean one (default: 5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise and of the --max-examples subset (default: 0)")
    parser.add_argument("--max-examples", type=positive_int, default=None, metavar="N",
                        help="evaluate a random subset of N examples (default: all; a "
                             "prepared dataset: a reservoir sample of 2000 read by streaming)")
    parser.add_argument("--baseline", metavar="RUN",
                        help="run folder (or evaluation.json) whose robustness curves are the "
                             "reference of effective robustness (default: the chance model)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 ok, 1 data error, 2 usage/run folder error)."""
    args = parse_args(argv)
    from mmkeras.evaluation.run_folder import EvaluationError, read_run

    try:
        read_run(Path(args.run))  # a wrong folder fails here, before TensorFlow loads
    except EvaluationError as err:
        print(one_line(err), file=sys.stderr)
        return 2
    from mmkeras.data.quarantine import DataError
    from mmkeras.evaluation.report import evaluate_run, format_summary

    try:
        report = evaluate_run(args.run, levels=args.levels, seed=args.seed, split=args.split,
                              max_examples=args.max_examples, baseline=args.baseline)
    except EvaluationError as err:
        print(one_line(err), file=sys.stderr)
        return 2
    except (DataError, ConnectionError) as err:
        print(one_line(err), file=sys.stderr)
        return 1
    print(format_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
