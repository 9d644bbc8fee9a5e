"""Export, in-graph input checks, the local TF Serving protocol server and the client.

One tiny trained run and one export are shared by the module; the server runs as a real
subprocess on free 127.0.0.1 ports and is always terminated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.serving.client import ServingClient, ServingError
from mmkeras.serving.export import TMP_DIR, ExportError, export_run, versions
from mmkeras.serving.protocol import fill_missing_modalities
from mmkeras.serving.server import input_specs
from mmkeras.serving.signature import encode_wav
from mmkeras.serving.validate import check_ops
from tests.conftest import TINY_MACHINE

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
MODALITIES = ["vibration", "audio", "environment", "notes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir) -> Path:
    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import train

    out = tmp_path_factory.mktemp("serving-run")
    train(resolve_config(None, ["epochs=1", f"dataset_args={json.dumps(TINY_MACHINE)}",
                                f"output={out}", "verbose=0"]))
    return out


@pytest.fixture(scope="module")
def examples(run_dir) -> dict[str, np.ndarray]:
    with np.load(run_dir / "examples.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models")
    path = export_run(run_dir, base=base)
    assert path == base / "mmkeras_model" / "1"
    return path


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="module")
def presence(loaded) -> bool:
    """Whether the trained model has presence inputs (the signature then takes flags)."""
    return "audio_present" in input_specs(loaded.signatures["serving_default"])


def _inputs(loaded, examples, n=4, signature="serving_default", **override):
    """Signature inputs: ``n`` real examples with overrides, flags filled (present = 1)."""
    out = {k: examples[k][:n].copy() for k in MODALITIES}
    out["notes"] = out["notes"].astype(bytes).astype(object)
    out.update(override)
    out = {k: v for k, v in out.items() if v is not None}
    out = fill_missing_modalities(out, input_specs(loaded.signatures[signature]))
    return {k: tf.constant(v) for k, v in out.items()}


def _probabilities(loaded, inputs):
    return loaded.signatures["serving_default"](**inputs)["probabilities"].numpy()


def test_export_is_complete_and_validated(exported, run_dir):
    report = json.loads((run_dir / "export_validation.json").read_text())
    assert report["ok"], report["problems"]
    assert report["max_abs_diff"] < 1e-5
    assert all(d < 1e-5 for d in report["max_abs_diff_by_signature"].values())
    assert report["keras_imported"] is False and report["mmkeras_imported"] is False
    assert report["warmup_requests"] == 4
    assert set(report["signatures"]) == {"serving_default", "serving_bytes"}
    assert {k for k in report["signatures"]["serving_bytes"]["inputs"]
            if not k.endswith("_present")} == {"vibration", "audio_wav", "environment", "notes"}
    assert {"probabilities", "class_id", "class_name"} <= set(
        report["signatures"]["serving_default"]["outputs"])
    extra = exported / "assets.extra"
    assert (extra / "tf_serving_warmup_requests").stat().st_size > 0
    assert not list((exported.parents[1] / TMP_DIR).iterdir())
    # the command validates an existing export on its own
    proc = subprocess.run([sys.executable, "-m", "mmkeras.export", "--validate", str(exported)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ok"] is True


@pytest.mark.parametrize("override, words", [
    ({"audio": np.zeros((4, 7999), np.float32)}, ["input audio:", "[batch, 8000]", "7999"]),
    ({"audio": np.zeros((4, 16000), np.float32)}, ["input audio:", "[batch, 8000]", "16000"]),
    ({"vibration": np.zeros((4, 500, 3), np.float32)},
     ["input vibration:", "[batch, 1000, 3]", "500"]),
])
def test_signature_refuses_wrong_shapes_naming_them(loaded, examples, override, words):
    fn = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(**_inputs(loaded, examples, **override))
    message = info.value.message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("name, bad, words", [
    ("environment", np.full((4, 8, 2), 1e30, np.float32), ["input environment:", "range"]),
    ("audio", np.full((4, 8000), np.nan, np.float32), ["input audio:", "NaN"]),
    ("audio", "int16", ["input audio:", "divide int16 PCM by 32768"]),
])
def test_bad_values_refused_or_treated_as_missing(loaded, examples, presence, name, bad, words):
    """Without presence inputs: InvalidArgument naming the input. With them: that modality is
    missing, i.e. the answer equals the one with ``<name>_present = 0``."""
    if isinstance(bad, str):
        bad = examples["audio"][:4] * 32767
    if not presence:
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            _probabilities(loaded, _inputs(loaded, examples, **{name: bad}))
        assert all(w in info.value.message for w in words), info.value.message
        return
    got = _probabilities(loaded, _inputs(loaded, examples, **{name: bad}))
    absent = _probabilities(loaded, _inputs(loaded, examples, **{
        f"{name}_present": np.zeros((4, 1), np.float32)}))
    assert np.abs(got - absent).max() < 1e-5


def test_one_nan_sample_affects_only_its_example(loaded, examples, presence):
    audio = examples["audio"][:4].copy()
    audio[2, 100] = np.nan
    good = _probabilities(loaded, _inputs(loaded, examples))
    assert good.shape == (4, 4) and np.allclose(good.sum(-1), 1, atol=1e-5)
    if not presence:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"audio: NaN .* examples \[2\]"):
            _probabilities(loaded, _inputs(loaded, examples, audio=audio))
        return
    got = _probabilities(loaded, _inputs(loaded, examples, audio=audio))
    flags = np.ones((4, 1), np.float32)
    flags[2] = 0
    want = _probabilities(loaded, _inputs(loaded, examples, audio_present=flags))
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(np.delete(got, 2, 0) - np.delete(good, 2, 0)).max() < 1e-5


def test_op_check_names_python_ops(tmp_path):
    class Bad(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            with tf.name_scope("bad_layer"):
                return {"y": tf.numpy_function(np.sort, [x], tf.float32)}

    module = Bad()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    _, problems = check_ops(tmp_path)
    assert problems and all("PyFunc" in p for p in problems)
    assert any("bad_layer" in p for p in problems), problems


def test_sigkill_during_export_places_nothing_and_rerun_succeeds(run_dir, tmp_path):
    base = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-m", "mmkeras.export", "--run", str(run_dir),
                             "--base", str(base)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list((base / TMP_DIR).glob("*/saved_model.pb")):
            assert time.monotonic() < deadline and proc.poll() is None, "no temp export seen"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # while validating: the SavedModel is written
    finally:
        proc.kill()
        proc.wait()
    assert versions(base / "mmkeras_model") == []
    assert list((base / TMP_DIR).iterdir())  # the killed export's leftovers, never served
    path = export_run(run_dir, base=base, log=lambda m: None)
    assert path.name == "1" and (path / "saved_model.pb").exists()
    assert not list((base / TMP_DIR).iterdir())
    with pytest.raises(ExportError, match="immutable"):
        export_run(run_dir, base=base, version=1, log=lambda m: None)


def test_model_failing_validation_is_never_placed(run_dir, tmp_path):
    from mmkeras.layers import load_model

    model = load_model(run_dir / "model.keras")
    for weight in model.trainable_weights:  # what learning_rate=.nan leaves behind
        weight.assign(np.full(weight.shape, np.nan, weight.dtype))
    with pytest.raises(ExportError, match="non-finite probabilities"):
        export_run(run_dir, base=tmp_path, model=model, log=lambda m: None)
    assert versions(tmp_path / "mmkeras_model") == []
    assert not list((tmp_path / TMP_DIR).iterdir())


# the local server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(exported):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmkeras.serve", "--model-base-path", str(exported.parents[1]),
         "--model-name", "mmkeras_model", "--rest-port", "0", "--grpc-port", "0",
         "--poll-seconds", "0.3", "--max-request-bytes", "3000000", "--label", "stable=1",
         "--client-timeout", "2"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line, "server exited before it was ready"
        ready = json.loads(line)
        assert ready["versions"] == [1]
        yield proc, ServingClient("127.0.0.1", "mmkeras_model", ready["rest_port"],
                                  ready["grpc_port"], timeout=30, retries=1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raw(examples, n=3):
    return {k: examples[k][:n] for k in MODALITIES}


def test_rest_and_grpc_round_trips_agree_with_the_signature(server, loaded, examples, presence):
    _, client = server
    expected = loaded.signatures["serving_default"](**_inputs(loaded, examples, 3))
    want = expected["probabilities"].numpy()
    names = [n.decode() for n in expected["class_name"].numpy()]
    for protocol, fmt in [("rest", "inputs"), ("rest", "instances"), ("grpc", "inputs")]:
        out = client.predict(_raw(examples), protocol=protocol, fmt=fmt)
        assert np.abs(out["probabilities"] - want).max() < 1e-5, (protocol, fmt)
        got = [n.decode() if isinstance(n, bytes) else str(n) for n in out["class_name"]]
        assert got == names and list(out["class_id"]) == list(want.argmax(-1))
    if presence:  # a modality left out is filled as missing: same as sending present = 0
        absent = _probabilities(loaded, _inputs(loaded, examples, 3, audio_present=np.zeros(
            (3, 1), np.float32)))
        without = {k: v for k, v in _raw(examples).items() if k != "audio"}
        for protocol in ("rest", "grpc"):
            out = client.predict(without, protocol=protocol)
            assert np.abs(out["probabilities"] - absent).max() < 1e-5, protocol
    pinned = client.predict(_raw(examples), protocol="grpc", version=1)
    labelled = client.predict(_raw(examples), label="stable")
    assert np.abs(pinned["probabilities"] - want).max() < 1e-5
    assert np.abs(labelled["probabilities"] - want).max() < 1e-5


def test_an_example_with_no_modality_present_gets_400(server, loaded, examples, presence):
    """Every modality absent in an example leaves the model no evidence: 400 / INVALID_ARGUMENT
    naming the example, on both protocols, and the server keeps serving."""
    assert presence, "the default config trains with modality dropout, so flags exist"
    proc, client = server
    zeros = np.zeros((2, 1), np.float32)
    flags = {f"{m}_present": zeros for m in MODALITIES}
    flags["audio_present"] = np.array([[1.0], [0.0]], np.float32)
    for protocol, code in [("rest", 400), ("grpc", "INVALID_ARGUMENT")]:
        with pytest.raises(ServingError, match=r"no modality is present in examples \[1\]: "
                           "each example needs at least one of vibration, audio") as info:
            client.predict({**_raw(examples, 2), **flags}, protocol=protocol)
        assert info.value.status == code
    flags["notes_present"] = np.array([[0.0], [1.0]], np.float32)
    want = _probabilities(loaded, _inputs(loaded, examples, 2, **flags))
    for protocol in ("rest", "grpc"):
        out = client.predict({**_raw(examples, 2), **flags}, protocol=protocol)
        assert np.abs(out["probabilities"] - want).max() < 1e-5
    assert proc.poll() is None


def test_encoded_wav_signature_over_both_protocols(server, loaded, examples):
    _, client = server
    inputs = _raw(examples)
    wavs = np.array([encode_wav(a, 8000) for a in inputs.pop("audio")], dtype=object)
    inputs["audio_wav"] = wavs
    direct = loaded.signatures["serving_bytes"](**_inputs(
        loaded, examples, 3, "serving_bytes", audio=None, audio_wav=wavs))
    for protocol in ("rest", "grpc"):
        out = client.predict(inputs, signature="serving_bytes", protocol=protocol)
        assert np.abs(out["probabilities"] - direct["probabilities"].numpy()).max() < 1e-5
    with pytest.raises(ServingError, match="audio_wav") as info:
        client.predict({**inputs, "audio_wav": np.array([b"RIFFxxxxWAVEjunk" * 4] * 3,
                                                        dtype=object)},
                       signature="serving_bytes", protocol="grpc")
    assert info.value.status == "INVALID_ARGUMENT"


def test_metadata_and_status(server):
    _, client = server
    for protocol in ("rest", "grpc"):
        meta = client.metadata(protocol)
        assert meta["serving_default"]["audio"] == {"dtype": "float32", "shape": [-1, -1]}
        assert meta["serving_bytes"]["audio_wav"]["dtype"] == "string"
        assert client.status(protocol) == [{"version": 1, "state": "AVAILABLE"}]


def _malformed_rest(rng, examples, presence):
    """One malformed REST body. With presence inputs an omitted modality or NaN is valid (it is
    missing), so those draws send a broken ``<modality>_present`` instead."""
    good = {k: examples[k][:1].tolist() for k in MODALITIES}
    kind = rng.integers(12)
    if kind == 0:
        return json.dumps(good)[: rng.integers(1, 50)].encode()
    if kind == 1:
        return bytes(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8))
    if kind == 2:
        return json.dumps({"inputs": {**good, "bogus": [1]}}).encode()
    if kind == 3 and presence:
        flag = [[1, 1]] if rng.integers(2) else [[0.5]]  # two flags, or one neither 0 nor 1
        return json.dumps({"inputs": {**good, "audio_present": flag}}).encode()
    if kind == 3:
        return json.dumps({"inputs": {k: v for k, v in good.items() if k != "audio"}}).encode()
    if kind == 4:
        return json.dumps({"inputs": {**good, "audio": [[0.0] * int(rng.integers(1, 50))]}}
                          ).encode()
    if kind == 5:
        return json.dumps({"inputs": {**good, "environment": [[["hot", 1]] * 8]}}).encode()
    if kind == 6:
        return json.dumps({"inputs": {**good, "notes": [{"b64": "%%%not base64"}]}}).encode()
    if kind == 7 and presence:
        return json.dumps({"inputs": {**good, "audio_present": ["yes"]}}).encode()
    if kind == 7:
        return json.dumps({"inputs": {**good, "audio": [[float("nan")] * 8000]}}).encode()
    if kind == 8:
        return json.dumps({"instances": []}).encode()
    if kind == 9:
        return json.dumps({"inputs": good, "instances": []}).encode()
    if kind == 10:
        return json.dumps({"inputs": {**good, "vibration": [[[1, 2]] * 1000]}}).encode()
    return json.dumps({"signature_name": "serving_bytes", "inputs": {
        **{k: v for k, v in good.items() if k != "audio"},
        "audio_wav": [{"b64": "UklGRiQAAABXQVZF"}]}}).encode()


def _malformed_grpc(rng, examples, presence):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mmkeras_model"
    good = {k: examples[k][:1] for k in MODALITIES}
    good["notes"] = good["notes"].astype(bytes)
    kind = rng.integers(7)
    if kind == 0:
        good["audio"] = good["audio"][:, : rng.integers(1, 7999)]
    elif kind == 1:
        good["audio"] = good["audio"].astype(np.float64)
    elif kind == 2 and presence:
        good["audio_present"] = np.ones((1, 1), np.float64)
    elif kind == 2:
        del good["environment"]
    elif kind == 3 and presence:
        good["audio_present"] = (np.ones((1, 2), np.float32) if rng.integers(2) else
                                 np.full((1, 1), 7.0, np.float32))
    elif kind == 3:
        good["environment"] = np.full((1, 8, 2), np.inf, np.float32)
    elif kind == 4:
        request.model_spec.signature_name = "serving_bytes"
        good["audio_wav"] = np.array([bytes(rng.integers(0, 256, 60, dtype=np.uint8))],
                                     dtype=object)
        del good["audio"]
    for k, v in good.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    if kind == 5:
        request.inputs["audio"].tensor_content = b"\x00" * int(rng.integers(1, 100))
    if kind == 6:
        request.inputs["vibration"].tensor_shape.dim[1].size = 7
    return request


def test_fuzz_malformed_requests_get_400_and_server_keeps_serving(server, examples, loaded,
                                                                 presence):
    import urllib.error
    import urllib.request

    from tensorflow_serving.apis import prediction_service_pb2_grpc

    proc, client = server
    rng = np.random.default_rng(0)
    url = f"http://127.0.0.1:{client.rest_port}/v1/models/mmkeras_model:predict"
    statuses: dict[int, int] = {}
    for _ in range(600):
        body = _malformed_rest(rng, examples, presence)
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            urllib.request.urlopen(request, timeout=30)
            status = 200
        except urllib.error.HTTPError as error:
            status = error.code
            assert "error" in json.loads(error.read())
        statuses[status] = statuses.get(status, 0) + 1
    big = json.dumps({"inputs": {"audio": [[0.5] * 8000] * 100}}).encode()  # ~4 MB
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, data=big, method="POST"), timeout=30)
    assert info.value.code == 400 and b"limit" in info.value.read()
    assert statuses == {400: 600}, statuses

    channel = grpc.insecure_channel(f"127.0.0.1:{client.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    codes: dict[str, int] = {}
    for _ in range(600):
        try:
            stub.Predict(_malformed_grpc(rng, examples, presence), timeout=30)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
            assert error.details()
        codes[code] = codes.get(code, 0) + 1
    channel.close()
    assert codes == {"INVALID_ARGUMENT": 600}, codes
    assert proc.poll() is None
    want = _probabilities(loaded, _inputs(loaded, examples, 3))
    for protocol in ("rest", "grpc"):
        out = client.predict(_raw(examples), protocol=protocol)
        assert np.abs(out["probabilities"] - want).max() < 1e-5


def test_new_versions_are_picked_up_and_partial_ones_never(server, exported, examples):
    proc, client = server
    model_dir = exported.parent
    partial = model_dir / "3"
    (partial / "variables").mkdir(parents=True)  # a copy in progress: no saved_model.pb
    odd = model_dir / "\u00b2"  # "²".isdigit() but not a version: ignored, polling goes on
    odd.mkdir()
    shutil.copy(exported / "saved_model.pb", odd)
    time.sleep(1)
    staging = exported.parents[1] / TMP_DIR / "copy"
    shutil.copytree(exported, staging)
    staging.rename(model_dir / "2")
    deadline = time.monotonic() + 60
    while [s["version"] for s in client.status()] != [2, 1]:
        assert time.monotonic() < deadline, client.status()
        time.sleep(0.2)
    out = client.predict(_raw(examples), protocol="grpc")
    pinned = client.predict(_raw(examples), version=1)
    assert np.abs(out["probabilities"] - pinned["probabilities"]).max() < 1e-5
    with pytest.raises(ServingError) as info:
        client.predict(_raw(examples), version=3)
    assert info.value.status == 404
    assert proc.poll() is None


def _post(port, body, chunked=False, path="/v1/models/mmkeras_model:predict"):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if chunked:
        body = iter([body[i:i + 2**16] for i in range(0, len(body), 2**16)])
    connection.request("POST" if body is not None else "GET", path, body=body,
                       encode_chunked=chunked)
    answer = connection.getresponse()
    status, data = answer.status, json.loads(answer.read())
    connection.close()
    return status, data


def test_rest_refuses_json_junk_with_400_naming_the_problem(server, examples, loaded):
    """Values numpy would silently convert (null -> NaN, true -> 1), literals Python cannot
    convert, text that is not Unicode, deep nesting: each a 400 naming the input, never 500."""
    proc, client = server
    good = {k: examples[k][:2].tolist() for k in MODALITIES}
    audio = json.dumps(good["audio"])
    cases = [
        (json.dumps({"inputs": {**good, "audio": [[None] * 8000] * 2}}), ["'audio'", "null"]),
        (json.dumps({"inputs": {**good, "audio": [[True] * 8000] * 2}}),
         ["'audio'", "true/false"]),
        (json.dumps({"inputs": {**good, "environment": [[[1, None]] * 8] * 2}}),
         ["'environment'", "null"]),
        ('{"inputs": {"audio": [[1' + "0" * 400 + "]]}}", ["'audio'", "too large"]),
        ('{"inputs": {"audio": [[' + "9" * 5000 + "]]}}", ["malformed JSON", "digits"]),
        ('{"inputs": {"notes": ["\\ud800", "x"], "audio": ' + audio + "}}",
         ["'notes'", "Unicode"]),
        ('{"inputs": {"notes": ' + "[" * 950 + '"a"' + "]" * 950 + "}}",
         ["'notes'", "nested"]),
        ('{"inputs": ' + "[" * 5000 + "]" * 5000 + "}", ["malformed JSON", "nested"]),
        ("", ["empty request body"]),
    ]
    for body, words in cases:
        status, answer = _post(client.rest_port, body.encode())
        assert status == 400 and all(w in answer["error"] for w in words), (body[:80], answer)
    # a chunked body has no Content-Length: over the limit it is still named as such
    big = json.dumps({"inputs": {"notes": ["a" * 4_000_000]}}).encode()
    status, answer = _post(client.rest_port, big, chunked=True)
    assert status == 400 and "exceeds the limit" in answer["error"], answer
    status, answer = _post(client.rest_port, json.dumps({"inputs": good}).encode(),
                           chunked=True)
    assert status == 200 and len(answer["outputs"]["probabilities"]) == 2
    # status endpoints: a version that is no number, a label that does not exist
    for path, code, word in [("/v1/models/mmkeras_model/versions/abc", 400, "integer"),
                             ("/v1/models/mmkeras_model/labels/nope", 404, "nope"),
                             ("/v1/models/mmkeras_model/labels/stable", 200, None)]:
        status, answer = _post(client.rest_port, None, path=path)
        assert status == code and (word is None or word in answer["error"]), (path, answer)
    assert proc.poll() is None
    want = _probabilities(loaded, _inputs(loaded, examples, 3))
    out = client.predict(_raw(examples), protocol="rest")
    assert np.abs(out["probabilities"] - want).max() < 1e-5


def test_grpc_refuses_rank_zero_empty_batch_and_bad_shapes(server, examples, loaded):
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    proc, client = server
    channel = grpc.insecure_channel(f"127.0.0.1:{client.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def request(n=2, **override):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = "mmkeras_model"
        values = {k: examples[k][:n] for k in MODALITIES}
        values["notes"] = values["notes"].astype(bytes)
        for k, v in {**values, **override}.items():
            message.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        return message

    negative = request()
    negative.inputs["audio"].tensor_shape.dim[0].size = -5
    for message, words in [(request(audio=np.float32(0.5)), ["'audio'", "2 dimensions"]),
                           (request(0), ["empty batch"]),
                           (negative, ["'audio'", "malformed TensorProto", "-5"])]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(message, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert all(w in info.value.details() for w in words), info.value.details()
    status = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        status.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "mmkeras_model", "version_label": "nope"}), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    want = _probabilities(loaded, _inputs(loaded, examples, 2))
    out = tf.make_ndarray(stub.Predict(request(), timeout=30).outputs["probabilities"])
    channel.close()
    assert np.abs(out - want).max() < 1e-5 and proc.poll() is None


def test_validate_refuses_empty_examples_or_warmup(exported, tmp_path):
    for name in ("mmkeras_examples.tfrecord", "tf_serving_warmup_requests"):
        copy = tmp_path / name / "1"
        shutil.copytree(exported, copy)
        (copy / "assets.extra" / name).write_bytes(b"")
        proc = subprocess.run([sys.executable, "-m", "mmkeras.export", "--validate", str(copy)],
                              capture_output=True, text=True, env=ENV, timeout=300)
        report = json.loads(proc.stdout)
        assert proc.returncode == 1 and report["ok"] is False, report
        assert any(name in p and "empty" in p for p in report["problems"]), report["problems"]


def test_export_to_an_unwritable_base_is_a_clear_error(run_dir, tmp_path):
    base = tmp_path / "a-file"
    base.write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "mmkeras.export", "--run", str(run_dir),
                           "--base", str(base)], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"cannot write the export under {base}" in proc.stderr, proc.stderr[-2000:]


def test_client_gives_up_after_bounded_retries():
    client = ServingClient("127.0.0.1", "m", rest_port=9, grpc_port=9, timeout=1, retries=2,
                           backoff=0.05)
    start = time.monotonic()
    with pytest.raises(ServingError):
        client.status("rest")
    with pytest.raises(ServingError, match="UNAVAILABLE"):
        client.status("grpc")
    assert time.monotonic() - start < 15


def test_export_help_and_errors_are_quiet(tmp_path):
    """``--help`` needs no TensorFlow (fast, nothing on stderr); an error is one line, without
    TensorFlow's C++ start-up chatter."""
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # it quiets TF itself
    proc = subprocess.run([sys.executable, "-m", "mmkeras.export", "--help"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == "" and "--validate" in proc.stdout
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mmkeras.export", "--help"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "tensorflow" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mmkeras.export", "--run", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: run folder {tmp_path} is not a finished run: missing ['config.yaml', "
        "'dataset.json', 'examples.npz', 'model.keras']"]


def test_stalled_and_idle_rest_connections_are_closed(server, examples):
    """A body that stops arriving gets 408 after --client-timeout (2 s here), an idle
    connection is closed, and neither holds the server: a good request still succeeds."""
    import socket

    _, client = server
    with socket.create_connection(("127.0.0.1", client.rest_port), timeout=20) as stalled, \
            socket.create_connection(("127.0.0.1", client.rest_port), timeout=20) as idle:
        stalled.sendall(b"POST /v1/models/mmkeras_model:predict HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                        b'{"inputs": ')
        start = time.monotonic()
        answer = b""
        while chunk := stalled.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"stopped arriving" in answer
        assert 1.5 < time.monotonic() - start < 15
        assert idle.recv(1) == b""  # closed by the server, not by the 20 s client timeout
    assert client.predict(_raw(examples))["probabilities"].shape[0] == 3
