"""Check an exported SavedModel in a fresh process that imports only TensorFlow and NumPy.

Run as ``python -m mmkeras.serving.validate EXPORT_DIR EXAMPLES.npz``: it loads the SavedModel
with ``tf.saved_model.load`` (no Keras model code, no mmkeras code), calls ``serving_default`` on
the arrays in ``EXAMPLES.npz`` (one per input; ``expected_probabilities`` if present is compared)
and prints a JSON line with the maximum absolute difference. Exit status 1 when it exceeds
``--atol``. TF Serving has no Python, so a model that needs Python to load fails here first.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import tensorflow as tf


def run(export_dir: str, examples: str, atol: float) -> dict:
    """Load, predict and compare; returns the report printed by the command."""
    loaded = tf.saved_model.load(export_dir)
    fn = loaded.signatures["serving_default"]
    data = dict(np.load(examples, allow_pickle=False))
    expected = data.pop("expected_probabilities", None)
    inputs = {k: tf.constant(v) for k, v in data.items()}
    outputs = fn(**inputs)
    probabilities = outputs["probabilities"].numpy()
    report = {
        "export_dir": export_dir,
        "inputs": sorted(fn.structured_input_signature[1]),
        "outputs": sorted(outputs),
        "num_examples": int(probabilities.shape[0]),
        "mmkeras_imported": any(m.startswith("mmkeras.") and m != __name__ and
                                m != "mmkeras.serving" for m in sys.modules),
    }
    if expected is not None:
        report["max_abs_diff"] = float(np.max(np.abs(probabilities - expected)))
        report["ok"] = report["max_abs_diff"] <= atol
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.serving.validate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("export_dir", help="SavedModel folder, e.g. runs/X/export/model/1")
    parser.add_argument("examples", help=".npz with one array per input (strings as unicode)")
    parser.add_argument("--atol", type=float, default=1e-5, help="allowed max abs difference")
    args = parser.parse_args(argv)
    report = run(args.export_dir, args.examples, args.atol)
    print(json.dumps(report))
    return 0 if report.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
