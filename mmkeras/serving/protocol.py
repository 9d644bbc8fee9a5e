"""TF Serving's request formats, shared by the local server and the client.

REST (``/v1/models/<name>:predict``): a JSON object with ``signature_name`` (optional) and either
``instances`` (row format: a list with one entry per example, each a dict of inputs or, for a
one-input signature, the value itself) or ``inputs`` (columnar: a dict of batched values, or the
value itself). Binary strings travel as ``{"b64": "<base64>"}``. Answers are ``{"predictions":
[...]}`` (row) or ``{"outputs": {...}}`` (columnar); errors ``{"error": "..."}`` with HTTP 400.

Inputs the signature does not know, missing inputs, wrong ranks or dtypes raise
:class:`BadRequest` naming the input. When the signature has ``<name>_present`` inputs, an
omitted modality is filled with an empty tensor and ``present = 0``
(:func:`fill_missing_modalities`), so clients may leave it out.

Example:
    >>> specs = {"x": InputSpec("float32", 2)}
    >>> parse_rest_body(b'{"instances": [[1, 2], [3, 4]]}', specs)[1]["x"].shape
    (2, 2)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

NUMERIC = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64,
           "uint8": np.uint8, "float16": np.float16}


class BadRequest(ValueError):
    """A request the server refuses: HTTP 400 / gRPC ``INVALID_ARGUMENT``."""


@dataclass(frozen=True)
class InputSpec:
    """A signature input as declared: dtype name, rank (batch axis included), declared sizes.

    ``dims`` holds the declared size per axis (None: any); None when only the rank is known.
    """

    dtype: str
    rank: int
    dims: tuple[int | None, ...] | None = None


def is_version_name(name: str) -> bool:
    """Whether a folder name is a version number as TF Serving reads them (ASCII digits)."""
    return name.isascii() and name.isdigit()


def _decode_strings(name: str, value: Any, depth: int) -> Any:
    """``value`` with text and ``{"b64"}`` as bytes; lists nested at most ``depth`` deep."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise BadRequest(f"input '{name}': a binary value must be {{\"b64\": \"...\"}}, got "
                             f"keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise BadRequest(f"input '{name}': malformed base64 ({error})") from None
    if isinstance(value, list):
        if depth <= 0:
            raise BadRequest(f"input '{name}': lists nested deeper than its dimensions")
        return [_decode_strings(name, v, depth - 1) for v in value]
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate such as "\ud800"
            raise BadRequest(f"input '{name}': text is not valid Unicode ({error.reason} at "
                             f"position {error.start}); send binary data as {{\"b64\": ...}}"
                             ) from None
    raise BadRequest(f"input '{name}': expected strings, got {type(value).__name__} {value!r:.40}")


def _shape_of(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def to_array(name: str, value: Any, spec: InputSpec, literals: bool = True) -> np.ndarray:
    """A JSON value (batch axis included) as an array of the input's dtype, or BadRequest.

    ``literals=False`` says the body holds no ``true``/``false``/``null`` at all, which skips
    the per-value scan for them (half the conversion time of a large numeric input).
    """
    if spec.dtype == "string":
        decoded = _decode_strings(name, value, spec.rank)
        array = np.empty(_shape_of(decoded), dtype=object)
        try:
            array[...] = decoded
        except ValueError:
            raise BadRequest(f"input '{name}': ragged nested lists (rows of different "
                             "lengths)") from None
        if any(not isinstance(v, bytes) for v in array.reshape(-1)):
            raise BadRequest(f"input '{name}': ragged nested lists (rows of different lengths)")
    else:
        if spec.dtype not in NUMERIC:
            raise BadRequest(f"input '{name}': dtype {spec.dtype} is not supported over REST")
        try:
            array = np.asarray(value, dtype=np.float64)
        except OverflowError:  # an integer literal beyond float64 (10**400)
            raise BadRequest(f"input '{name}': a number is too large for {spec.dtype}") from None
        except (ValueError, TypeError):
            raise BadRequest(f"input '{name}': expected {spec.dtype} numbers in rectangular "
                             f"nested lists, got {json.dumps(value)[:60]}") from None
        if literals:
            _refuse_non_numbers(name, value, array, spec)
        if spec.dtype in ("uint8", "int32", "int64"):
            info = np.iinfo(NUMERIC[spec.dtype])
            if (not np.all(np.isfinite(array)) or np.any(array != np.round(array))
                    or np.any(array < info.min) or np.any(array > info.max)):
                raise BadRequest(f"input '{name}': expected integers in [{info.min}, {info.max}]"
                                 f" for {spec.dtype}")
        with np.errstate(over="ignore"):
            array = array.astype(NUMERIC[spec.dtype])
    check_rank(name, array, spec)
    return array


def _refuse_non_numbers(name: str, value: Any, array: np.ndarray, spec: InputSpec) -> None:
    """BadRequest for ``null`` and ``true``/``false``, which numpy turns into NaN and 0/1."""
    if array.size == 0:
        return
    kinds = set(map(type, np.asarray(value, dtype=object).reshape(-1)))
    bad = sorted(k.__name__ for k in kinds if k is bool or k is type(None))
    if bad:
        found = " and ".join({"bool": "true/false", "NoneType": "null"}[b] for b in bad)
        raise BadRequest(f"input '{name}': expected {spec.dtype} numbers, got {found}")


def check_rank(name: str, array: np.ndarray, spec: InputSpec) -> None:
    """BadRequest unless ``array`` has the rank (and any declared sizes) of the signature."""
    if array.ndim != spec.rank:
        raise BadRequest(f"input '{name}': expected {spec.rank} dimensions (batch first), "
                         f"received shape {list(array.shape)}")
    if spec.dims and any(d is not None and d != n for d, n in zip(spec.dims, array.shape,
                                                                 strict=True)):
        expected = ["batch" if d is None else d for d in spec.dims]
        raise BadRequest(f"input '{name}': expected shape {expected}, received "
                         f"{list(array.shape)}")


def parse_rest_body(
    body: bytes, signatures: dict[str, dict[str, InputSpec]] | dict[str, InputSpec]
) -> tuple[str, dict[str, np.ndarray], str]:
    """``(signature_name, inputs, format)`` of a REST predict body; format ``row``/``columnar``.

    ``signatures`` maps signature names to their inputs (or is one signature's inputs).
    """
    if not body.strip():
        raise BadRequest("empty request body: send a JSON object with 'instances' or 'inputs' "
                         "(and a Content-Length header or chunked transfer encoding)")
    try:
        request = json.loads(body)
    except RecursionError:
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        if "integer string conversion" in str(error):
            raise BadRequest("malformed JSON body: a number has too many digits") from None
        raise BadRequest(f"malformed JSON body: {str(error)[:200]}") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object with 'instances' or 'inputs'")
    signature = request.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise BadRequest("'signature_name' must be a string")
    if signatures and all(isinstance(v, InputSpec) for v in signatures.values()):
        specs = signatures
    elif signature in signatures:
        specs = signatures[signature]
    else:
        raise BadRequest(f"unknown signature_name '{signature}'; available: {sorted(signatures)}")
    extra = sorted(set(request) - {"signature_name", "instances", "inputs"})
    if extra or ("instances" in request) == ("inputs" in request):
        raise BadRequest("the body needs exactly one of 'instances' (row format) or 'inputs' "
                         f"(columnar format){f'; unknown keys {extra}' if extra else ''}")
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'instances' must be a non-empty list, one entry per example")
        if all(isinstance(r, dict) and "b64" not in r for r in rows):
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise BadRequest("every instance must have the same inputs")
            values = {k: [r[k] for r in rows] for k in keys}
        elif len(specs) == 1:
            values = {next(iter(specs)): rows}
        else:
            raise BadRequest(f"each instance must be an object with inputs {sorted(specs)}")
        fmt = "row"
    else:
        columns = request["inputs"]
        if isinstance(columns, dict) and "b64" not in columns:
            values = columns
        elif len(specs) == 1:
            values = {next(iter(specs)): columns}
        else:
            raise BadRequest(f"'inputs' must be an object with inputs {sorted(specs)}")
        fmt = "columnar"
    check_names(values, specs)
    literals = any(token in body for token in (b"true", b"false", b"null"))
    return signature, {k: to_array(k, v, specs[k], literals) for k, v in values.items()}, fmt


def check_names(values: dict[str, Any], specs: dict[str, InputSpec]) -> None:
    """BadRequest for unknown inputs (a presence model's omitted modalities are filled later)."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise BadRequest(f"unknown inputs {unknown}; the signature takes {sorted(specs)}")


def _modality_inputs(specs: dict[str, InputSpec], modality: str) -> list[str]:
    return [k for k in specs if k == modality or re.fullmatch(f"{modality}_(wav|encoded)", k)]


def fill_missing_modalities(
    inputs: dict[str, np.ndarray], specs: dict[str, InputSpec]
) -> dict[str, np.ndarray]:
    """Complete ``inputs`` for a signature with ``<m>_present`` inputs; BadRequest if missing.

    An omitted modality gets an empty tensor (``[batch, 0, ...]``, or ``""`` for strings) and
    ``<m>_present = 0``; a given one without a flag gets ``<m>_present = 1``. A given empty
    tensor (``[batch, 0, ...]``, batch > 0) is a missing modality: its flag is set to 0, as the
    signature itself does, whatever the request said.

    Example:
        >>> specs = {"a": InputSpec("float32", 2), "a_present": InputSpec("float32", 2),
        ...          "b": InputSpec("float32", 2)}
        >>> out = fill_missing_modalities({"b": np.zeros((3, 4), np.float32)}, specs)
        >>> out["a"].shape, out["a_present"].ravel().tolist()
        ((3, 0), [0.0, 0.0, 0.0])
    """
    if not inputs:
        raise BadRequest("the request has no inputs")
    batch = len(next(iter(inputs.values())))
    out = dict(inputs)
    for flag in [k for k in specs if k.endswith("_present")]:
        modality = flag[: -len("_present")]
        for name in _modality_inputs(specs, modality):
            if name not in out:
                spec = specs[name]
                shape = (batch,) + (0,) * (spec.rank - 1)
                out[name] = (np.full(shape, b"", dtype=object) if spec.dtype == "string"
                             else np.zeros(shape, NUMERIC.get(spec.dtype, np.float32)))
                out.setdefault(flag, np.zeros((batch, 1), np.float32))
            elif batch and out[name].ndim > 1 and out[name].size == 0:
                out[flag] = np.zeros((batch, 1), np.float32)
        out.setdefault(flag, np.ones((batch, 1), np.float32))
    missing = sorted(set(specs) - set(out))
    if missing:
        raise BadRequest(f"missing inputs {missing}; the signature takes {sorted(specs)}")
    return out


def jsonable(array: np.ndarray) -> Any:
    """An output array as JSON: numbers as lists, strings as text (``{"b64"}`` if not UTF-8)."""
    if array.dtype == object or array.dtype.kind == "S":
        def text(v: bytes) -> Any:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def format_rest_response(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """``{"predictions": [...]}`` (row format) or ``{"outputs": {...}}`` (columnar)."""
    if fmt == "columnar":
        if len(outputs) == 1:
            return {"outputs": jsonable(next(iter(outputs.values())))}
        return {"outputs": {k: jsonable(v) for k, v in outputs.items()}}
    columns = {k: jsonable(v) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    batch = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(batch)]}


def to_json_value(array: np.ndarray) -> Any:
    """A request array as JSON for REST: bytes as ``{"b64": ...}``, numbers as lists."""
    if array.dtype == object or array.dtype.kind in "SU":
        def enc(v: Any) -> Any:
            data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            try:
                return data.decode("utf-8") if b"\x00" not in data and data.isascii() else {
                    "b64": base64.b64encode(data).decode("ascii")}
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(data).decode("ascii")}
        return np.vectorize(enc, otypes=[object])(array).tolist() if array.size else \
            np.empty(array.shape).tolist()
    return array.tolist()
