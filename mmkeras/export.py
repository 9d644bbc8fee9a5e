"""Export a finished run for TF Serving, or validate an exported SavedModel.

Examples:
    python -m mmkeras.export --run runs/machine-20261123-101500
    python -m mmkeras.export --run runs/X --base /srv/models --version 7
    python -m mmkeras.export --validate /srv/models/mmkeras_model/7

The logic is in :mod:`mmkeras.serving.export` and :mod:`mmkeras.serving.validate`.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning chatter

from mmkeras.cli import Parser, drop_chatter, native_stderr
from mmkeras.serving import RANGE_MARGIN


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = Parser(
        prog="python -m mmkeras.export",
        description="Write a run's model as a validated, versioned TF Serving SavedModel "
                    "(<base>/<model_name>/<version>/), or validate one with --validate.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="finished run folder (has model.keras, config.yaml, "
                      "dataset.json, examples.npz)")
    what.add_argument("--validate", metavar="PATH", help="SavedModel version folder to check "
                      "in a TensorFlow-only process (ops, saved_model_cli, outputs, warmup)")
    parser.add_argument("--base", help="export base path (default: <run>/export)")
    parser.add_argument("--version", type=int, help="version number (default: next free one)")
    parser.add_argument("--margin", type=float, default=RANGE_MARGIN,
                        help="accepted input range: training range widened by this many spans "
                             f"on each side (default {RANGE_MARGIN})")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="allowed max abs difference to the Keras model (default 1e-5)")
    args = parser.parse_args(argv)  # first: --help needs no TensorFlow
    startup: list[str] = []
    with native_stderr(startup):  # TensorFlow's C++ start-up lines, shown only if not chatter
        from mmkeras.serving.export import ExportError, export_run, run_validation
    if kept := drop_chatter(startup):
        print("\n".join(kept), file=sys.stderr)

    if args.validate:
        report = run_validation(args.validate, args.atol)
        print(json.dumps(report, indent=2))
        return 0 if report.get("ok") else 1
    try:
        path = export_run(args.run, args.base, args.version, margin=args.margin, atol=args.atol)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
