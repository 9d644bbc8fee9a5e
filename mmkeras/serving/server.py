"""A local server speaking TF Serving's REST and gRPC protocols, for development and tests.

Production runs the ``tensorflow/serving`` image (see ``export/``); this server exists because
the TF Serving binary cannot be installed from PyPI, so that clients, notebooks and tests can
exercise the same calls on any machine. It loads the SavedModels of one model from TF Serving's
layout (``<base>/<name>/<version>/``), serves the newest version, any version by number and any
label given with ``labels``, and polls the folder for new versions. Only integer-named folders
holding ``saved_model.pb`` are considered, so a temporary export folder is never loaded; a
version that fails to load is reported in the model status and retried when it changes.

REST (werkzeug): ``POST /v1/models/<name>[/versions/<n>|/labels/<l>]:predict``, ``GET
/v1/models/<name>[/versions/<n>]`` (status), ``GET .../metadata``. gRPC (grpcio):
``PredictionService.Predict``, ``PredictionService.GetModelMetadata``,
``ModelService.GetModelStatus``. Bad requests get HTTP 400 ``{"error": "..."}`` or gRPC
``INVALID_ARGUMENT``, with a message naming the input; the server keeps serving.

Example:
    server = LocalServer("runs/X/export", "mmkeras_model", rest_port=0, grpc_port=0)
    server.start()        # server.rest_port, server.grpc_port: the ports picked
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from mmkeras.serving.protocol import (
    BadRequest,
    InputSpec,
    check_names,
    check_rank,
    fill_missing_modalities,
    format_rest_response,
    is_version_name,
    parse_rest_body,
)

MAX_REQUEST_BYTES = 16 * 2**20
CLIENT_TIMEOUT_S = 30.0
PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|"
                  r"/labels/(?P<label>[^/:]+))?(?:/(?P<meta>metadata)|:(?P<verb>\w+))?$")


class NotFound(LookupError):
    """Unknown model, version or label: HTTP 404 / gRPC ``NOT_FOUND``."""


@dataclass
class Version:
    """One loaded SavedModel version."""

    number: int
    loaded: Any
    signatures: dict[str, dict[str, InputSpec]]
    signature_defs: meta_graph_pb2.MetaGraphDef
    mtime: float


@dataclass
class ModelRepository:
    """The versions of one model under ``base_path``, reloaded by :meth:`poll`."""

    base_path: Path
    name: str
    labels: dict[str, int] = field(default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    errors: dict[int, tuple[float, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def candidates(self) -> dict[int, Path]:
        """Complete version folders: integer names holding ``saved_model.pb``."""
        folder = self.base_path
        if not folder.is_dir():
            return {}
        return {int(p.name): p for p in folder.iterdir()
                if is_version_name(p.name) and (p / "saved_model.pb").is_file()}

    def poll(self) -> list[str]:
        """Load new versions, drop removed ones; return what changed, as messages."""
        found = self.candidates()
        changes = []
        for number, path in sorted(found.items()):
            try:
                mtime = (path / "saved_model.pb").stat().st_mtime
            except OSError:  # removed since listed: the next poll sees it gone
                continue
            if number in self.versions or self.errors.get(number, (None,))[0] == mtime:
                continue
            try:
                version = load_version(number, path, mtime)
            except Exception as error:  # a broken version must not stop the server
                self.errors[number] = (mtime, f"{type(error).__name__}: {error}"[:500])
                changes.append(f"version {number} failed to load: {self.errors[number][1]}")
                continue
            self.errors.pop(number, None)
            with self.lock:
                self.versions[number] = version
            changes.append(f"loaded version {number}")
        with self.lock:
            for number in [n for n in self.versions if n not in found]:
                del self.versions[number]
                changes.append(f"unloaded version {number} (folder removed)")
        return changes

    def get(self, version: str | int | None = None, label: str | None = None) -> Version:
        """The requested version (newest when neither ``version`` nor ``label`` is given)."""
        with self.lock:
            if label is not None:
                if label not in self.labels:
                    raise NotFound(f"unknown version label '{label}' for model '{self.name}'")
                version = self.labels[label]
            if version is None:
                if not self.versions:
                    raise NotFound(f"model '{self.name}' has no version loaded yet")
                return self.versions[max(self.versions)]
            number = parse_version(version)
            if number not in self.versions:
                raise NotFound(f"model '{self.name}' version {number} is not loaded; "
                               f"available: {sorted(self.versions)}")
            return self.versions[number]

    def status(self, version: str | int | None = None, label: str | None = None
               ) -> list[dict[str, Any]]:
        """TF Serving's ``model_version_status`` list (of one version or label when given)."""
        if label is not None:
            if label not in self.labels:
                raise NotFound(f"unknown version label '{label}' for model '{self.name}'")
            version = self.labels[label]
        with self.lock:
            numbers = sorted(set(self.versions) | set(self.errors), reverse=True)
        if version is not None:
            numbers = [n for n in numbers if n == parse_version(version)]
            if not numbers:
                raise NotFound(f"model '{self.name}' has no version {version}")
        return [{"version": str(n),
                 "state": "AVAILABLE" if n in self.versions else "END",
                 "status": ({"error_code": "OK", "error_message": ""} if n in self.versions else
                            {"error_code": "UNKNOWN", "error_message": self.errors[n][1]})}
                for n in numbers]


def parse_version(version: str | int) -> int:
    """A version from a URL or spec as an int; BadRequest when it is not a number."""
    if isinstance(version, int):
        return version
    if not is_version_name(version.removeprefix("-")):
        raise BadRequest(f"version must be an integer, got '{version}'")
    return int(version)


def load_version(number: int, path: Path, mtime: float) -> Version:
    """Load one SavedModel and read its signature defs."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    loaded = tf.saved_model.load(str(path))
    signatures = {name: input_specs(fn) for name, fn in loaded.signatures.items()}
    return Version(number, loaded, signatures, saved.meta_graphs[0], mtime)


def input_specs(fn: Any) -> dict[str, InputSpec]:
    """The inputs of a loaded signature as :class:`InputSpec` (dtype, rank, declared sizes).

    With :func:`mmkeras.serving.protocol.fill_missing_modalities` this completes a raw input
    dict (presence flags) for a direct call of the signature.
    """
    return {k: InputSpec("string" if v.dtype == tf.string else v.dtype.name, v.shape.rank,
                         tuple(v.shape.as_list()))
            for k, v in fn.structured_input_signature[1].items()}


def _error_text(error: tf.errors.OpError) -> str:
    """The useful part of a TensorFlow error: our check's message, or the op's own, with input."""
    message = error.message
    found = re.search(r"assertion failed: \[(.*)\]\s*\n", message, re.S)
    if found:
        return found.group(1).strip().replace("\\'", "'")
    lines = [ln.strip() for ln in message.splitlines()
             if ln.strip() and not ln.strip().startswith(("[[", "Detected at", "<stack",
                                                            "Graph execution"))]
    text = lines[-1] if lines else message
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    node = re.search(r"node decode_(\w+?)/", message)
    return f"input '{node.group(1)}': {text}" if node else f"invalid input: {text}"


def predict(version: Version, signature: str, inputs: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Run one signature on checked inputs; BadRequest for anything the graph refuses."""
    if signature not in version.signatures:
        raise BadRequest(f"unknown signature_name '{signature}'; available: "
                         f"{sorted(version.signatures)}")
    specs = version.signatures[signature]
    check_names(inputs, specs)
    for name, array in inputs.items():  # before filling: that needs a batch axis
        spec = specs[name]
        if (array.dtype == object) != (spec.dtype == "string") or (
                spec.dtype != "string" and array.dtype.name != spec.dtype):
            raise BadRequest(f"input '{name}': expected {spec.dtype}, received "
                             f"{'string' if array.dtype == object else array.dtype.name}")
        check_rank(name, array, spec)
    sizes = {len(a) for a in inputs.values()}
    if len(sizes) > 1:
        raise BadRequest(f"inputs have different batch sizes {sorted(sizes)}")
    if sizes == {0}:
        raise BadRequest(f"empty batch: every input has batch size 0 ({sorted(inputs)})")
    inputs = fill_missing_modalities(inputs, specs)
    fn = version.loaded.signatures[signature]
    try:
        outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.InvalidArgumentError as error:
        raise BadRequest(_error_text(error)) from None
    except (TypeError, ValueError) as error:  # refused by the signature's own argument binding
        raise BadRequest(f"inputs do not match the signature: {str(error)[:300]}") from None
    return {k: v.numpy() for k, v in outputs.items()}


class LocalServer:
    """REST and gRPC front ends over one :class:`ModelRepository`, with a polling thread."""

    def __init__(self, model_base_path: str | Path, model_name: str, rest_port: int = 8501,
                 grpc_port: int = 8500, host: str = "127.0.0.1", poll_seconds: float = 1.0,
                 max_request_bytes: int = MAX_REQUEST_BYTES, labels: dict[str, int] | None = None,
                 log: Any = print, client_timeout: float = CLIENT_TIMEOUT_S) -> None:
        base = Path(model_base_path)
        if (base / model_name).is_dir() and not any(is_version_name(p.name)
                                                         for p in base.iterdir()):
            base = base / model_name  # accept the export base or the model folder itself
        self.repository = ModelRepository(base, model_name, dict(labels or {}))
        self.host, self.poll_seconds, self.log = host, poll_seconds, log
        self.max_request_bytes = max_request_bytes
        self._stop = threading.Event()
        # a REST connection silent for client_timeout seconds (a body never sent in full, an
        # idle keep-alive) is closed, so slow or stalled clients cannot hold every thread
        handler = type("TimedHandler", (WSGIRequestHandler,), {"timeout": client_timeout})
        self._http = make_server(host, rest_port, self._wsgi, threaded=True,
                                 request_handler=handler)
        self.rest_port = self._http.server_port
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.max_receive_message_length", 4 * max_request_bytes + 2**20),
                     ("grpc.max_send_message_length", 4 * max_request_bytes + 2**20)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{host}:{grpc_port}")
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Load what is there, then serve and poll in background threads."""
        for message in self.repository.poll():
            self.log(message)
        self._grpc.start()
        for target in (self._http.serve_forever, self._poll_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving and polling."""
        self._stop.set()
        self._http.shutdown()
        self._grpc.stop(grace=1).wait()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                messages = self.repository.poll()
            except Exception as error:  # keep polling: one bad listing must not stop updates
                messages = [f"polling {self.repository.base_path} failed: "
                            f"{type(error).__name__}: {error}"]
            for message in messages:
                self.log(message)

    def resolve(self, name: str, version: Any = None, label: str | None = None) -> Version:
        if name != self.repository.name:
            raise NotFound(f"unknown model '{name}'; this server serves "
                           f"'{self.repository.name}'")
        return self.repository.get(version, label)

    def metadata(self, version: Version) -> get_model_metadata_pb2.SignatureDefMap:
        """The version's signatures, as TF Serving's metadata answer holds them."""
        defs = get_model_metadata_pb2.SignatureDefMap()
        for k, v in version.signature_defs.signature_def.items():
            if k != "__saved_model_init_op":
                defs.signature_def[k].CopyFrom(v)
        return defs

    # REST -----------------------------------------------------------------------------------
    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        # one byte over the limit: a chunked body is cut there, so a longer one is detectable
        request.max_content_length = self.max_request_bytes + 1
        try:
            status, body = self._route(request)
        except BadRequest as error:
            status, body = 400, {"error": str(error)}
        except NotFound as error:
            status, body = 404, {"error": str(error)}
        except (TimeoutError, ClientDisconnected):  # the body stopped arriving: client_timeout
            status, body = 408, {"error": "the request body stopped arriving (timed out); "
                                          "send the whole body the Content-Length announces"}
        except HTTPException as error:  # werkzeug: body over the limit, bad framing
            code = error.code or 400
            status, body = (400 if code == 413 else code), {"error": self._http_error(error)}
        except Exception as error:  # any other failure: 500, and the server keeps serving
            status, body = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        return Response(json.dumps(body), status, mimetype="application/json")(
            environ, start_response)

    def _http_error(self, error: HTTPException) -> str:
        if error.code == 413:  # Content-Length over the limit
            return (f"request body exceeds the limit of {self.max_request_bytes} bytes "
                    "(--max-request-bytes)")
        return error.description or str(error)

    def _route(self, request: Request) -> tuple[int, Any]:
        match = PATH.match(request.path)
        if not match:
            raise NotFound(f"no such endpoint {request.path}; use /v1/models/<name>[:predict]")
        name, version, label = match["name"], match["version"], match["label"]
        if match["verb"]:
            if match["verb"] != "predict" or request.method != "POST":
                raise NotFound(f"unsupported call {request.method} :{match['verb']}; "
                               "this server answers POST :predict")
            if (request.content_length or 0) > self.max_request_bytes:
                raise BadRequest(f"request body of {request.content_length} bytes exceeds the "
                                 f"limit of {self.max_request_bytes} bytes (--max-request-bytes)")
            model = self.resolve(name, version, label)
            body = request.get_data()
            if len(body) > self.max_request_bytes:  # chunked: no Content-Length to check first
                raise BadRequest(f"request body exceeds the limit of {self.max_request_bytes} "
                                 "bytes (--max-request-bytes)")
            signature, inputs, fmt = parse_rest_body(body, model.signatures)
            outputs = predict(model, signature, inputs)
            return 200, format_rest_response(outputs, fmt)
        if request.method != "GET":
            raise NotFound(f"use GET for {request.path}")
        if match["meta"]:
            model = self.resolve(name, version, label)
            meta = json_format.MessageToDict(self.metadata(model),
                                             preserving_proto_field_name=True)
            return 200, {"model_spec": {"name": name, "signature_name": "",
                                        "version": str(model.number)},
                         "metadata": {"signature_def": meta}}
        if name != self.repository.name:
            raise NotFound(f"unknown model '{name}'")
        return 200, {"model_version_status": self.repository.status(version, label)}


def _grpc_spec(server: LocalServer, spec: Any) -> Version:
    which = spec.WhichOneof("version_choice")
    version = spec.version.value if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    return server.resolve(spec.name, version, label)


def _abort(context: grpc.ServicerContext, error: Exception) -> None:
    code = (grpc.StatusCode.NOT_FOUND if isinstance(error, NotFound)
            else grpc.StatusCode.INVALID_ARGUMENT)
    context.abort(code, str(error))


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: LocalServer) -> None:
        self.server = server

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
                ) -> predict_pb2.PredictResponse:
        try:
            if request.ByteSize() > self.server.max_request_bytes:
                raise BadRequest(f"request of {request.ByteSize()} bytes exceeds the limit of "
                                 f"{self.server.max_request_bytes} bytes (--max-request-bytes)")
            version = _grpc_spec(self.server, request.model_spec)
            signature = request.model_spec.signature_name or "serving_default"
            inputs = {}
            for name, proto in request.inputs.items():
                dims = [d.size for d in proto.tensor_shape.dim]
                if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
                    raise BadRequest(f"input '{name}': malformed TensorProto: shape {dims} "
                                     "must have a known rank and every dimension >= 0")
                try:
                    inputs[name] = tf.make_ndarray(proto)
                except Exception as error:  # malformed TensorProto of any kind
                    raise BadRequest(f"input '{name}': malformed TensorProto ({error})"[:300]
                                     ) from None
            outputs = predict(version, signature, inputs)
        except (BadRequest, NotFound) as error:
            _abort(context, error)
        except Exception as error:  # as REST's 500: the message, never a traceback
            context.abort(grpc.StatusCode.INTERNAL,
                          f"internal error: {type(error).__name__}: {error}"[:500])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version.number
        response.model_spec.signature_name = signature
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise BadRequest("metadata_field must be ['signature_def']")
            version = _grpc_spec(self.server, request.model_spec)
        except (BadRequest, NotFound) as error:
            _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version.number
        response.metadata["signature_def"].Pack(self.server.metadata(version))
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: LocalServer) -> None:
        self.server = server

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext
                       ) -> get_model_status_pb2.GetModelStatusResponse:
        try:
            if request.model_spec.name != self.server.repository.name:
                raise NotFound(f"unknown model '{request.model_spec.name}'")
            which = request.model_spec.WhichOneof("version_choice")
            statuses = self.server.repository.status(
                request.model_spec.version.value if which == "version" else None,
                request.model_spec.version_label if which == "version_label" else None)
        except (BadRequest, NotFound) as error:
            _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in statuses:
            item = response.model_version_status.add()
            item.version = int(s["version"])
            item.state = get_model_status_pb2.ModelVersionStatus.State.Value(s["state"])
            item.status.error_code = 0 if s["status"]["error_code"] == "OK" else 2
            item.status.error_message = s["status"]["error_message"]
        return response
