"""Export a run as a versioned TF Serving SavedModel, atomically and only when it validates.

Layout: ``<base>/<model_name>/<version>/`` (``saved_model.pb``, ``variables/``, ``assets/``,
``assets.extra/``), what TF Serving's ``--model_base_path`` expects. A version is built in
``<base>/.mmkeras-tmp/`` (outside every model's version namespace: TF Serving only serves
integer-named folders under ``<base>/<model_name>``), validated there in a fresh process that
imports neither Keras nor mmkeras (:mod:`mmkeras.serving.validate`), and only then renamed into
place. A SavedModel that fails validation is deleted and never placed; temporary folders left by
a killed export are removed by the next one.

``assets.extra/`` holds ``tf_serving_warmup_requests`` (``PredictionLog`` records that TF Serving
replays at load), ``mmkeras_examples.tfrecord`` (real examples with the Keras model's outputs,
used by ``--validate``), ``mmkeras_inputs.json`` (exact shapes and accepted ranges) and
``mmkeras_validation.json`` (the validation report).

Example:
    export_run("runs/machine-20261123-101500")   # -> runs/.../export/mmkeras_model/<next>/
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from mmkeras.serving.protocol import is_version_name
from mmkeras.serving.signature import (
    RANGE_MARGIN,
    InputContract,
    bytes_input_name,
    encode_wav,
    input_contracts,
    make_serving_fn,
    presence_names,
    signature_specs,
)
from mmkeras.training.runfiles import fsync

TMP_DIR = ".mmkeras-tmp"
WARMUP_FILE = "tf_serving_warmup_requests"
EXAMPLES_FILE = "mmkeras_examples.tfrecord"
VALIDATION_EXAMPLES = 32
SIGNATURES = {"serving_default": False, "serving_bytes": True}


class ExportError(RuntimeError):
    """The export was refused (validation failed, version taken...); nothing was placed."""


def write_saved_model(
    model: keras.Model, contracts: dict[str, InputContract], class_names: list[str], path: Path
) -> None:
    """Write the SavedModel with ``serving_default`` and ``serving_bytes`` to ``path``."""
    presence = presence_names(model, list(contracts))
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, encoded in SIGNATURES.items():
        archive.add_endpoint(name, make_serving_fn(model, contracts, class_names, encoded),
                             input_signature=[signature_specs(contracts, presence, encoded)])
    archive.write_out(str(path), verbose=False)


def _as_tensor_value(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "U":
        return np.char.encode(array, "utf-8").astype(object)
    return array


def signature_examples(
    contracts: dict[str, InputContract], presence: list[str], examples: dict[str, np.ndarray],
    encoded: bool,
) -> dict[str, np.ndarray]:
    """Signature inputs for ``examples`` (raw arrays): present flags 1, bytes encoded if asked."""
    inputs: dict[str, np.ndarray] = {}
    for name, c in contracts.items():
        x = np.asarray(examples[name]).astype(c.dtype if c.dtype != "string" else str)
        alt = bytes_input_name(c) if encoded else None
        if alt and c.kind == "audio":
            rate = int(c.options.get("sample_rate", 8000))
            x = np.array([encode_wav(row, rate) for row in x], dtype=object)
        elif alt:
            x = np.array([tf.io.encode_png(row).numpy() for row in x.astype(np.uint8)],
                         dtype=object)
        inputs[alt or name] = x
        if name in presence:
            inputs[f"{name}_present"] = np.ones((len(x), 1), np.float32)
    return inputs


def keras_probabilities(model: keras.Model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The Keras model's class probabilities for raw ``inputs`` (tensor or dict output)."""
    feed = {k: tf.constant(_as_tensor_value(v)) for k, v in inputs.items()}
    # As a traced graph, like the SavedModel: eager kernels sum in another order (gated fusion:
    # 4.5e-5 apart in eager, which the 1e-5 comparison would blame on the export).
    out = tf.function(lambda x: model(x, training=False), autograph=False)(feed)
    return keras.ops.convert_to_numpy(out["probabilities"] if isinstance(out, dict) else out)


def _decoded(contracts: dict[str, InputContract], raw: dict[str, np.ndarray],
             encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``serving_bytes`` sees after decoding: the raw inputs with WAV/PNG round trips."""
    out = dict(raw)
    for name, c in contracts.items():
        alt = bytes_input_name(c)
        if alt and c.kind == "audio":
            out[name] = np.stack([tf.audio.decode_wav(b, desired_channels=1).audio.numpy()[:, 0]
                                  for b in encoded[alt]])
        elif alt:
            out[name] = np.stack([tf.io.decode_png(b).numpy() for b in encoded[alt]])
    return out


def _request(model_name: str, signature: str, inputs: dict[str, np.ndarray], size: int):
    from tensorflow_serving.apis import model_pb2, predict_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(_as_tensor_value(v[:size])))
    return request


def write_validation_assets(
    model: keras.Model, contracts: dict[str, InputContract], examples: dict[str, np.ndarray],
    model_name: str, path: Path,
) -> None:
    """``assets.extra``: examples with expected outputs, the warmup file, the input contracts.

    Both files hold ``PredictionLog`` records; the examples also carry the Keras model's
    ``probabilities`` as the response.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = path / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    presence = presence_names(model, list(contracts))
    n = min(VALIDATION_EXAMPLES, len(next(iter(examples.values()))))
    raw = {k: np.asarray(examples[k][:n]) for k in contracts}
    with (tf.io.TFRecordWriter(str(extra / EXAMPLES_FILE)) as checks,
          tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as warmup):
        for signature, encoded in SIGNATURES.items():
            inputs = signature_examples(contracts, presence, raw, encoded)
            keras_inputs = signature_examples(contracts, presence, raw, False)
            if encoded:
                keras_inputs.update(_decoded(contracts, keras_inputs, inputs))
            response = predict_pb2.PredictResponse()
            response.outputs["probabilities"].CopyFrom(
                tf.make_tensor_proto(keras_probabilities(model, keras_inputs)))
            log = prediction_log_pb2.PredictLog(request=_request(model_name, signature, inputs,
                                                                 n), response=response)
            checks.write(prediction_log_pb2.PredictionLog(predict_log=log).SerializeToString())
            for size in (1, min(8, n)):
                log = prediction_log_pb2.PredictLog(
                    request=_request(model_name, signature, inputs, size))
                warmup.write(prediction_log_pb2.PredictionLog(predict_log=log)
                             .SerializeToString())
    (extra / "mmkeras_inputs.json").write_text(json.dumps(
        {"presence": presence, "inputs": {k: c.to_dict() for k, c in contracts.items()}},
        indent=2))


def run_validation(path: Path, atol: float = 1e-5, timeout: float = 600) -> dict[str, Any]:
    """Run :mod:`mmkeras.serving.validate` on ``path`` in a fresh process; return its report.

    The script runs as a file with ``-P``, so neither ``mmkeras`` nor ``keras`` is importable
    through the working directory and the report records whether either was imported.
    """
    script = Path(__file__).with_name("validate.py")
    proc = subprocess.run([sys.executable, "-P", str(script), str(path), "--atol", str(atol)],
                          capture_output=True, text=True, check=False, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "problems": [f"validation process crashed (exit {proc.returncode}):"
                                          f" {proc.stderr[-3000:]}"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(base: Path) -> list[Path]:
    """Remove temporary export folders whose exporting process is gone; return them."""
    removed = []
    tmp = base / TMP_DIR
    for folder in sorted(tmp.glob("*")) if tmp.is_dir() else []:
        try:
            pid = int(folder.name.split("-")[-2])
        except (ValueError, IndexError):
            pid = -1
        if pid == os.getpid() or (pid > 0 and _alive(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def versions(model_dir: Path) -> list[int]:
    """Integer version folders under ``model_dir`` (TF Serving's version namespace), sorted."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and is_version_name(p.name))


def _fsync_tree(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        fsync(p)


def load_run(run_dir: Path) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """``config.yaml``, ``dataset.json`` and ``examples.npz`` of a finished run folder."""
    missing = [f for f in ("config.yaml", "dataset.json", "examples.npz", "model.keras")
               if not (run_dir / f).exists()]
    if missing:
        raise ExportError(f"run folder {run_dir} is not a finished run: missing {missing}")
    from mmkeras.evaluation.run_folder import read_run_file

    cfg = read_run_file(run_dir / "config.yaml", yaml.safe_load, ExportError)
    card = read_run_file(run_dir / "dataset.json", json.loads, ExportError)
    try:
        with np.load(run_dir / "examples.npz", allow_pickle=False) as data:
            examples = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ExportError(f"{run_dir / 'examples.npz'} cannot be read ({err}): the run folder "
                          "is damaged; train it again (--overwrite)") from None
    return cfg, card, examples


def export_run(
    run_dir: str | Path,
    base: str | Path | None = None,
    version: int | None = None,
    model: keras.Model | None = None,
    *,
    margin: float = RANGE_MARGIN,
    atol: float = 1e-5,
    log: Any = print,
) -> Path:
    """Export the run in ``run_dir`` to ``<base>/<model_name>/<version>/``; return that folder.

    ``base`` defaults to ``<run_dir>/export``, ``version`` to the next free integer, ``model``
    to ``<run_dir>/model.keras``. Raises :class:`ExportError`, placing nothing, when the version
    exists or validation fails. The report also goes to ``<run_dir>/export_validation.json``.
    """
    run_dir = Path(run_dir)
    cfg, card, examples = load_run(run_dir)
    if model is None:
        from mmkeras.evaluation.run_folder import load_run_model

        model = load_run_model(run_dir / "model.keras", ExportError)
    base = Path(base) if base is not None else run_dir / "export"
    model_name = str(cfg["model_name"])
    model_dir = base / model_name
    try:  # fail now, not after minutes of writing and validating, when nothing can be placed
        model_dir.mkdir(parents=True, exist_ok=True)
        (base / TMP_DIR).mkdir(exist_ok=True)
        probe = model_dir / f".mmkeras-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        raise ExportError(f"cannot write the export under {base}: {error.strerror} "
                          f"({error.filename}); pick a writable --base") from None
    for stale in clean_stale_temps(base):
        log(f"removed {stale} left by an interrupted export")
    if version is None:
        version = (versions(model_dir) or [0])[-1] + 1
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    final = model_dir / str(int(version))
    if final.exists():
        raise ExportError(f"{final} exists; TF Serving versions are immutable: pick another "
                          f"--version (next free: {(versions(model_dir) or [0])[-1] + 1})")
    contracts = input_contracts(card["modalities"], examples, margin)
    tmp = base / TMP_DIR / f"{model_name}-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        log(f"writing SavedModel for {model_name} version {version} in {tmp}")
        write_saved_model(model, contracts, card["class_names"], tmp)
        write_validation_assets(model, contracts, examples, model_name, tmp)
        log("validating in a TensorFlow-only process")
        report = run_validation(tmp, atol)
        report["export_dir"] = str(final)
        (run_dir / "export_validation.json").write_text(json.dumps(report, indent=2))
        if not report.get("ok"):
            raise ExportError(f"export of {run_dir} failed validation, nothing placed: "
                              + "; ".join(report.get("problems", [])))
        (tmp / "assets.extra" / "mmkeras_validation.json").write_text(json.dumps(report,
                                                                                 indent=2))
        _fsync_tree(tmp)
        if final.exists():
            raise ExportError(f"{final} appeared while exporting; versions are immutable")
        try:
            os.rename(tmp, final)
        except OSError as error:
            raise ExportError(f"could not place {final}: {error.strerror}; nothing was "
                              "placed") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"exported {final} in {time.perf_counter() - start:.1f} s "
        f"(max abs diff {report.get('max_abs_diff', float('nan')):.2g})")
    return final
