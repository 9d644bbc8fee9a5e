"""Check an exported SavedModel the way TF Serving will use it, importing only TensorFlow.

Run as ``python -P mmkeras/serving/validate.py EXPORT_DIR`` (what ``python -m mmkeras.export
--validate`` does): run as a script it makes ``keras``, ``tf_keras`` and ``mmkeras`` unimportable
before importing TensorFlow, so the SavedModel must load without them. Checks:

1. ops: every op in the graph and its functions is registered in core TensorFlow, and none is
   ``PyFunc``/``PyFuncStateless``/``EagerPyFunc`` (``tf.numpy_function``/``tf.py_function``);
   each offender is named with its node, whose scope is the Keras layer;
2. ``tf.saved_model.load`` and the ``serving_default`` signature exist;
3. ``saved_model_cli show --all`` runs and lists every signature input;
4. on the real examples in ``assets.extra/mmkeras_examples.tfrecord`` (``PredictionLog``
   records whose response holds the Keras model's probabilities) every signature returns finite
   probabilities that match the Keras model (max abs difference <= ``--atol``);
5. ``assets.extra/tf_serving_warmup_requests`` parses as ``PredictionLog`` records and each
   request runs.

Prints one JSON line; exit status 1 when a check fails. With a second argument ``EXAMPLES.npz``
(one array per ``serving_default`` input plus ``expected_probabilities``) it checks those instead
of the assets, which are then optional.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# TF Serving has neither: make importing them fail here (TensorFlow imports keras when it can)
BLOCKED = ("keras", "tf_keras", "mmkeras")
if __name__ == "__main__":
    sys.modules.update(dict.fromkeys(BLOCKED))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
WARMUP_FILE = "tf_serving_warmup_requests"
EXAMPLES_FILE = "mmkeras_examples.tfrecord"


def check_ops(export_dir: str | Path) -> tuple[int, list[str]]:
    """Number of distinct ops and one problem per Python or non-core op, naming node and layer."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    ops, problems = set(), []
    for graph in saved.meta_graphs:
        nodes = [(n, "graph") for n in graph.graph_def.node]
        for fn in graph.graph_def.library.function:
            nodes += [(n, fn.signature.name) for n in fn.node_def]
        for node, where in nodes:
            ops.add(node.op)
            if node.op in PYTHON_OPS:
                why = "runs Python (tf.numpy_function/tf.py_function), which TF Serving lacks"
            elif op_def_registry.get(node.op) is None:
                why = "is not a core TensorFlow op (custom op library)"
            else:
                continue
            layer = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
            problems.append(f"op {node.op} in layer '{layer}' (node {node.name!r}, function "
                            f"{where}) {why}")
    return len(ops), sorted(set(problems))


def saved_model_cli(export_dir: str | Path) -> str:
    """Output of ``saved_model_cli show --dir EXPORT_DIR --all``."""
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "tensorflow.python.tools.saved_model_cli", "show",
         "--dir", str(export_dir), "--all"], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"saved_model_cli failed: {proc.stderr[-2000:]}")
    return proc.stdout


def _requests(path: Path) -> list[Any]:
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log
            for r in tf.data.TFRecordDataset(str(path))]


def _call(loaded: Any, request: Any) -> dict[str, tf.Tensor]:
    fn = loaded.signatures[request.model_spec.signature_name or "serving_default"]
    return fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})


def compare_examples(loaded: Any, logs: list[Any]) -> dict[str, float]:
    """Max abs difference to the expected probabilities (the logged responses), per signature."""
    diffs = {}
    for log in logs:
        expected = tf.make_ndarray(log.response.outputs["probabilities"])
        got = _call(loaded, log.request)["probabilities"].numpy()
        signature = log.request.model_spec.signature_name or "serving_default"
        diff = float(np.max(np.abs(got - expected)))
        diffs[signature] = max(diffs.get(signature, 0.0), diff if np.isfinite(diff) else np.inf)
    return diffs


def probability_problems(loaded: Any, logs: list[Any]) -> list[str]:
    """Outputs that are not probabilities: non-finite, outside [0, 1], rows not summing to 1."""
    problems = []
    for log in logs:
        signature = log.request.model_spec.signature_name or "serving_default"
        p = _call(loaded, log.request)["probabilities"].numpy()
        if not np.all(np.isfinite(p)):
            problems.append(f"{signature}: non-finite probabilities on real examples (NaN "
                            "weights?)")
        elif p.min() < 0 or p.max() > 1 or np.abs(p.sum(-1) - 1).max() > 1e-3:
            problems.append(f"{signature}: outputs are not probabilities (range "
                            f"[{p.min():.3g}, {p.max():.3g}], row sums off by "
                            f"{np.abs(p.sum(-1) - 1).max():.3g})")
    return problems


def replay_warmup(loaded: Any, path: Path) -> int:
    """Run every request of the warmup file; return how many ran."""
    logs = _requests(path)
    for log in logs:
        _call(loaded, log.request)
    return len(logs)


def _legacy_logs(examples: str) -> list[Any]:
    """One ``PredictLog`` from an ``.npz`` of ``serving_default`` inputs and expected output."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    data = dict(np.load(examples, allow_pickle=False))
    expected = data.pop("expected_probabilities", None)
    if expected is None:
        return []
    request = predict_pb2.PredictRequest()
    for k, v in data.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(np.char.encode(v, "utf-8")
                                                        if v.dtype.kind == "U" else v))
    response = predict_pb2.PredictResponse()
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(expected))
    return [prediction_log_pb2.PredictLog(request=request, response=response)]


def run(export_dir: str, examples: str | None = None, atol: float = 1e-5) -> dict[str, Any]:
    """All checks; returns the report printed by the command."""
    problems: list[str] = []
    report: dict[str, Any] = {"export_dir": export_dir}
    report["num_ops"], op_problems = check_ops(export_dir)
    problems += op_problems
    loaded = tf.saved_model.load(export_dir)
    signatures = {}
    for name, fn in loaded.signatures.items():
        signatures[name] = {
            "inputs": {k: {"dtype": v.dtype.name, "shape": v.shape.as_list()}
                       for k, v in sorted(fn.structured_input_signature[1].items())},
            "outputs": sorted(fn.structured_outputs),
        }
    report["signatures"] = signatures
    if "serving_default" not in signatures:
        problems.append("no serving_default signature")
    cli = saved_model_cli(export_dir)
    unlisted = [f"{s}/{k}" for s, sig in signatures.items() for k in sig["inputs"]
                if f"['{k}'] tensor_info" not in cli]
    report["saved_model_cli_lines"] = len(cli.splitlines())
    if unlisted:
        problems.append(f"saved_model_cli show does not list inputs {unlisted}")
    extra = Path(export_dir) / "assets.extra"
    if examples is not None:
        logs = _legacy_logs(examples)
    elif (extra / EXAMPLES_FILE).exists():
        logs = _requests(extra / EXAMPLES_FILE)
    else:
        logs = []
        problems.append(f"no {extra / EXAMPLES_FILE}: nothing to compare with the Keras model")
    compared = {g.request.model_spec.signature_name or "serving_default" for g in logs}
    if examples is None and sorted(compared) != sorted(signatures):
        problems.append(f"{extra / EXAMPLES_FILE} has examples for {sorted(compared)}, not for "
                        f"every signature {sorted(signatures)} (empty or truncated file?)")
    diffs = compare_examples(loaded, logs)
    if diffs:
        report["max_abs_diff"] = diffs.get("serving_default", max(diffs.values()))
        report["max_abs_diff_by_signature"] = diffs
        report["num_examples"] = int(max(len(tf.make_ndarray(g.response.outputs[
            "probabilities"])) for g in logs))
    problems += [f"{s}: max abs difference {d:.3g} to the Keras model exceeds {atol}"
                 for s, d in diffs.items() if not d <= atol]
    problems += probability_problems(loaded, logs)
    if (extra / WARMUP_FILE).exists():
        report["warmup_requests"] = replay_warmup(loaded, extra / WARMUP_FILE)
        if not report["warmup_requests"]:
            problems.append(f"warmup file {extra / WARMUP_FILE} holds no records (empty or "
                            "truncated file?)")
    elif examples is None:
        problems.append(f"no warmup file {extra / WARMUP_FILE}")
    report["keras_imported"] = sys.modules.get("keras") is not None
    report["mmkeras_imported"] = sys.modules.get("mmkeras") is not None
    report["problems"] = problems
    report["ok"] = not problems
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -P mmkeras/serving/validate.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("export_dir", help="SavedModel folder, e.g. runs/X/export/model/1")
    parser.add_argument("examples", nargs="?", help="optional .npz: serving_default inputs and "
                        "expected_probabilities (default: the export's assets.extra)")
    parser.add_argument("--atol", type=float, default=1e-5, help="allowed max abs difference")
    args = parser.parse_args(argv)
    try:
        report = run(args.export_dir, args.examples, args.atol)
    except Exception as error:  # any failure is a failed validation, reported
        report = {"export_dir": args.export_dir, "ok": False,
                  "problems": [f"{type(error).__name__}: {str(error)[:2000]}"]}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
