"""A client for TF Serving (or :mod:`mmkeras.serve`) over REST and gRPC, returning numpy arrays.

REST: ``/v1/models/<name>[/versions/<n>|/labels/<l>]:predict`` in the ``inputs`` (columnar) or
``instances`` (row) format, bytes as ``{"b64": ...}``, ``/metadata`` and the model status.
gRPC: ``PredictionService.Predict`` and ``GetModelMetadata``, ``ModelService.GetModelStatus``
(stubs from tensorflow-serving-api). Every call has a timeout; connection failures, 5xx and
gRPC ``UNAVAILABLE`` are retried a bounded number of times; a refused request raises
:class:`ServingError` at once with the server's message.

When the signature has ``<modality>_present`` inputs, :meth:`ServingClient.predict` fills an
omitted modality (empty tensor, present 0) from the metadata, so TF Serving, which requires every
input, accepts the request.

Example:
    client = ServingClient("127.0.0.1", "mmkeras_model", rest_port=8501, grpc_port=8500)
    client.predict({"audio": audio, "notes": notes}, protocol="grpc")["class_name"]
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mmkeras.serving.protocol import InputSpec, fill_missing_modalities, to_json_value

RETRY_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class ServingError(RuntimeError):
    """The server refused or failed a call; ``status`` is the HTTP status or gRPC code name."""

    def __init__(self, status: int | str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _dtype_name(enum: int) -> str:
    return "string" if enum == tf.string.as_datatype_enum else tf.as_dtype(enum).name


class ServingClient:
    """Talk to one model on a TF Serving-compatible server.

    Args:
        host: server address.
        model_name: the served model's name.
        rest_port, grpc_port: ports (8501 and 8500 by default, as TF Serving).
        timeout: seconds per attempt.
        retries: extra attempts after a connection failure, 5xx or ``UNAVAILABLE``.
        backoff: seconds before the first retry, doubled after each.
    """

    def __init__(self, host: str, model_name: str, rest_port: int = 8501, grpc_port: int = 8500,
                 timeout: float = 10.0, retries: int = 2, backoff: float = 0.2) -> None:
        if retries < 0 or timeout <= 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0, got {retries}, {timeout}")
        self.host, self.model_name = host, model_name
        self.rest_port, self.grpc_port = rest_port, grpc_port
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._channel: grpc.Channel | None = None
        self._specs: dict[tuple[str, str], dict[str, InputSpec]] = {}

    # plumbing ----------------------------------------------------------------------------
    def _url(self, version: int | None, label: str | None, suffix: str = "") -> str:
        path = f"/v1/models/{self.model_name}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{label}"
        return f"http://{self.host}:{self.rest_port}{path}{suffix}"

    def _retrying(self, call: Any) -> Any:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                retry = not isinstance(error, urllib.error.HTTPError) or error.code >= 500
                failure: Exception = error
            except grpc.RpcError as error:
                retry, failure = error.code() in RETRY_GRPC, error
            if not retry or attempt == self.retries:
                raise self._as_error(failure) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _as_error(error: Exception) -> ServingError:
        if isinstance(error, urllib.error.HTTPError):
            body = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body
            return ServingError(error.code, message)
        if isinstance(error, grpc.RpcError):
            return ServingError(error.code().name, error.details() or "")
        return ServingError("UNAVAILABLE", str(error))

    def _http(self, url: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")

        def call() -> Any:
            request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())

        return self._retrying(call)

    def _stub(self, kind: str) -> Any:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}", options=[
                ("grpc.max_receive_message_length", 256 * 2**20),
                ("grpc.max_send_message_length", 256 * 2**20)])
        if kind == "model":
            return model_service_pb2_grpc.ModelServiceStub(self._channel)
        return prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        """Close the gRPC channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spec(self, spec: Any, version: int | None, label: str | None,
              signature: str | None = None) -> None:
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature:
            spec.signature_name = signature

    # calls -------------------------------------------------------------------------------
    def status(self, protocol: str = "rest", version: int | None = None) -> list[dict[str, Any]]:
        """``[{"version": int, "state": "AVAILABLE"|...}]`` for the model's versions."""
        if protocol == "rest":
            answer = self._http(self._url(version, None))
            return [{"version": int(s["version"]), "state": s["state"]}
                    for s in answer["model_version_status"]]
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version, None)
        answer = self._retrying(lambda: self._stub("model").GetModelStatus(
            request, timeout=self.timeout))
        return [{"version": s.version,
                 "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state)}
                for s in answer.model_version_status]

    def metadata(self, protocol: str = "rest", version: int | None = None,
                 label: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """``{signature: {input: {"dtype": ..., "shape": [...]}}}`` (-1 for unknown sizes)."""
        if protocol == "rest":
            answer = self._http(self._url(version, label, "/metadata"))
            defs = answer["metadata"]["signature_def"]["signature_def"]
            return {name: {k: {"dtype": _rest_dtype(v["dtype"]),
                               "shape": [int(d["size"]) for d in v["tensor_shape"].get("dim", [])]}
                           for k, v in sig.get("inputs", {}).items()}
                    for name, sig in defs.items()}
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, label)
        answer = self._retrying(lambda: self._stub("predict").GetModelMetadata(
            request, timeout=self.timeout))
        defs = get_model_metadata_pb2.SignatureDefMap()
        answer.metadata["signature_def"].Unpack(defs)
        return {name: {k: {"dtype": _dtype_name(v.dtype),
                           "shape": [d.size for d in v.tensor_shape.dim]}
                       for k, v in sig.inputs.items()}
                for name, sig in defs.signature_def.items()}

    def _input_specs(self, signature: str, protocol: str) -> dict[str, InputSpec]:
        key = (signature, protocol)
        if key not in self._specs:
            meta = self.metadata(protocol)
            if signature not in meta:
                raise ServingError(400, f"unknown signature '{signature}'; the model has "
                                   f"{sorted(meta)}")
            self._specs[key] = {k: InputSpec(v["dtype"], len(v["shape"]))
                                for k, v in meta[signature].items()}
        return self._specs[key]

    def predict(self, inputs: dict[str, Any], signature: str = "serving_default",
                protocol: str = "rest", version: int | None = None, label: str | None = None,
                fmt: str = "inputs") -> dict[str, np.ndarray]:
        """Predict on a batch ``{input: array}``; returns ``{output: array}``.

        ``fmt`` is ``inputs`` (columnar) or ``instances`` (row) for REST. Strings come back as
        ``str`` objects over REST and ``bytes`` over gRPC, as TF Serving returns them.
        """
        if protocol not in ("rest", "grpc"):
            raise ValueError(f"protocol must be 'rest' or 'grpc', got {protocol!r}")
        arrays = {k: _as_array(v) for k, v in inputs.items()}
        specs = self._input_specs(signature, protocol)
        if any(k.endswith("_present") for k in specs):
            arrays = fill_missing_modalities(arrays, specs)
        if protocol == "rest":
            if fmt == "inputs":
                body: dict[str, Any] = {"inputs": {k: to_json_value(v) for k, v in
                                                   arrays.items()}}
            elif fmt == "instances":
                columns = {k: to_json_value(v) for k, v in arrays.items()}
                batch = len(next(iter(columns.values())))
                body = {"instances": [{k: v[i] for k, v in columns.items()}
                                      for i in range(batch)]}
            else:
                raise ValueError(f"fmt must be 'inputs' or 'instances', got {fmt!r}")
            body["signature_name"] = signature
            answer = self._http(self._url(version, label, ":predict"), body)
            if "outputs" in answer:
                out = answer["outputs"]
                return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) \
                    else {"output": np.asarray(out)}
            rows = answer["predictions"]
            if rows and isinstance(rows[0], dict):
                return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
            return {"output": np.asarray(rows)}
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, label, signature)
        for k, v in arrays.items():
            request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        answer = self._retrying(lambda: self._stub("predict").Predict(request,
                                                                      timeout=self.timeout))
        return {k: tf.make_ndarray(v) for k, v in answer.outputs.items()}


def _rest_dtype(name: str) -> str:
    return {"DT_STRING": "string"}.get(name, tf.as_dtype(getattr(
        tf.dtypes, name[3:].lower(), tf.float32)).name if name.startswith("DT_") else name)


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return np.char.encode(array, "utf-8").astype(object)
    if array.dtype.kind == "S":
        return array.astype(object)
    return array
