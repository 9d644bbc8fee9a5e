"""The schema of a prepared dataset: a YAML file read by ``python -m mmkeras.prepare``.

It declares what each manifest row holds and how rows become training examples:

``name``
    dataset name (run folders and ``dataset.json``); default ``prepared``.
``modalities``
    name -> modality. ``kind`` is one of ``audio`` (``<name>_path``: WAV/FLAC; ``shape:
    [samples]``, ``sample_rate``), ``image`` (``<name>_path``: PNG/JPEG/...; ``shape: [H, W,
    C]``), ``stream`` (``<name>_path``: a CSV/NPY stream file of rows ``t, v_1 .. v_C``, see
    :func:`mmkeras.data.manifest.read_stream`), ``text`` (the ``<name>`` column) or ``numeric``
    (``<name>``, or ``<name>_0 .. <name>_{n-1}`` with ``shape: [n]``). ``required: false``
    lets a row lack the modality (empty cells): the example then holds zeros and
    ``<name>_present = 0``. ``options`` go to the model's fixed front end
    (:func:`mmkeras.data.preprocessing.fixed_transform`): audio ``n_fft``, ``hop_length``,
    ``n_mels``, ``fmin``, ``fmax``, ``top_db``; stream ``spectrogram: {n_fft, hop_length}`` or
    ``differences: true``; text ``max_tokens``, ``sequence_length``; image ``augment``.
``label``
    ``column`` and ``classes`` (the label set; the class index is the position in it).
``split``
    ``column``: the group column (subject, machine, speaker); ``fractions`` of ``train``,
    ``val`` and ``test``; optional ``assign`` (split -> group values placed there explicitly)
    and ``seed``. A group goes to the split its value hashes to (sha256 of ``"<seed>:<value>"``
    read as a number in [0, 1), against the cumulative fractions): every example of a group
    lands in one split, the same one on every run and runner, whatever the manifest's order.
``timeline`` and ``window`` (both or neither)
    Without them each row is one example, and a stream needs ``shape: [T, C]`` and the
    columns ``<name>_start_s`` and ``<name>_end_s``: the window ``[start, end)`` resampled to
    ``T`` values (exactly :mod:`mmkeras.data.manifest`). With them each row is a recording:
    every stream (``channels: C``) is aligned with :func:`mmkeras.data.align.align` (its
    ``align: {method, tolerance}``, tolerance in seconds; duplicate timestamps averaged) onto
    the ``timeline`` grid at ``rate_hz`` over the streams' common span (``time_unit: ns``
    reads the timestamps as integer nanoseconds and aligns exactly in int64, ``s`` as float
    seconds), then cut into windows of ``length_s`` every ``hop_s``
    (:mod:`mmkeras.data.windowing`). A window where a present stream covers fewer than
    ``min_presence`` of the steps is dropped; the remaining gaps are filled per recording with
    :func:`mmkeras.data.impute.impute` (the stream's ``impute``: ``linear``, ``ffill`` or
    ``zero``). Other modalities of the row are repeated in each of its windows.

Every problem is a :class:`SchemaError` naming the file and the field path, with the nearest
valid name for a typo. Numbers may be written ``1e-3`` (YAML 1.1 reads that as a string).

Example (``data_pipelines/schemas/example.yaml`` is a complete one):
    >>> schema = PrepareSchema.model_validate({
    ...     "modalities": {"speech": {"kind": "audio", "shape": [8000], "sample_rate": 8000}},
    ...     "label": {"column": "digit", "classes": [0, 1]},
    ...     "split": {"column": "speaker", "fractions": {"train": 0.8, "val": 0.1, "test": 0.1}},
    ... })
    >>> schema.manifest_schema().columns()
    ['speech_path', 'digit']
    >>> schema.split_of("george") in ("train", "val", "test")
    True
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from mmkeras.config import (
    Float,
    Name,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    _choice,
    _closest,
    read_yaml_mapping,
)
from mmkeras.data.align import METHODS as ALIGN_METHODS
from mmkeras.data.dataset import ModalitySpec
from mmkeras.data.manifest import Field as ManifestField
from mmkeras.data.manifest import ManifestSchema
from mmkeras.data.preprocessing import LOGMEL_KEYS, TEXT_DEFAULTS

__all__ = ["SPLITS", "PrepareSchema", "SchemaError", "load_schema"]

SPLITS = ("train", "val", "test")
MODALITY_KINDS = ("audio", "image", "stream", "text", "numeric")
IMPUTE = ("linear", "ffill", "zero")
_OPTIONS = {
    "audio": (*LOGMEL_KEYS[1:],),
    "image": ("augment",),
    "stream": ("spectrogram", "differences"),
    "text": tuple(TEXT_DEFAULTS),
    "numeric": (),
}
_MODEL_KIND = {"audio": "audio", "image": "image", "stream": "timeseries", "text": "text",
               "numeric": "tabular"}


class SchemaError(ValueError):
    """A problem in a prepare schema; the one-line message names the file and field path."""


class _Strict(BaseModel):
    """Unknown keys are refused with the nearest valid name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            for key in data:
                if key not in valid:
                    raise ValueError(f"unknown field {key!r}{_closest(str(key), valid)} "
                                     f"Valid: {', '.join(valid)}")
        return data


class AlignSchema(_Strict):
    """How a stream goes onto the timeline: an :func:`~mmkeras.data.align.align` method and its
    tolerance in seconds (None: no limit)."""

    method: Annotated[StrictStr, _choice(*ALIGN_METHODS)] = "linear"
    tolerance: Annotated[Float, Field(ge=0)] | None = None


class ModalitySchema(_Strict):
    """One modality: its kind, shape and how it is read (see the module docstring)."""

    kind: Annotated[StrictStr, _choice(*MODALITY_KINDS)]
    shape: list[PositiveInt] | None = None
    channels: PositiveInt | None = None
    sample_rate: PositiveInt | None = None
    align: AlignSchema = AlignSchema()
    impute: Annotated[StrictStr, _choice(*IMPUTE)] = "linear"
    required: StrictBool = True
    options: dict[StrictStr, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModalitySchema:
        valid = _OPTIONS[self.kind]
        for key in self.options:
            if key not in valid:
                raise ValueError(f"options: {self.kind} has no option {key!r}"
                                 f"{_closest(key, valid)} Valid: {', '.join(valid) or 'none'}")
        if (self.kind == "audio") != (self.sample_rate is not None):
            raise ValueError("sample_rate is required for audio modalities and only for them")
        if self.channels is not None and self.kind != "stream":
            raise ValueError("channels applies to stream modalities only; use shape")
        ranks = {"audio": (1,), "image": (3,), "numeric": (0, 1), "text": (0,), "stream": (2,)}
        if self.shape is not None and len(self.shape) not in ranks[self.kind]:
            raise ValueError(f"shape {self.shape}: a {self.kind} shape has "
                             f"{' or '.join(map(str, ranks[self.kind]))} dimension(s)")
        if self.kind in ("audio", "image") and self.shape is None:
            raise ValueError(f"shape is required for {self.kind} modalities")
        return self


class LabelSchema(_Strict):
    """The label column and its classes (class index = position in ``classes``)."""

    column: Name
    classes: list[StrictStr | StrictInt] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> LabelSchema:
        names = [str(c) for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"classes must be distinct, got {self.classes}")
        return self


class SplitSchema(_Strict):
    """Group column, split fractions, explicit group assignments and the hash seed."""

    column: Name
    fractions: dict[StrictStr, Annotated[Float, Field(ge=0)]]
    assign: dict[StrictStr, list[StrictStr | StrictInt]] = Field(default_factory=dict)
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _splits(self) -> SplitSchema:
        for where, names in (("fractions", self.fractions), ("assign", self.assign)):
            for name in names:
                if name not in SPLITS:
                    raise ValueError(f"{where}: unknown split {name!r}{_closest(name, SPLITS)} "
                                     f"Splits: {', '.join(SPLITS)}")
        if set(self.fractions) != set(SPLITS):
            raise ValueError(f"fractions needs train, val and test (0 is allowed), got "
                             f"{sorted(self.fractions)}")
        if not math.isclose(sum(self.fractions.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"fractions must sum to 1, got {sum(self.fractions.values()):g}")
        seen: dict[str, str] = {}
        for split, groups in self.assign.items():
            for group in map(str, groups):
                if seen.setdefault(group, split) != split:
                    raise ValueError(f"assign: group {group!r} is in {seen[group]!r} and {split!r}")
        return self


class TimelineSchema(_Strict):
    """The common grid streams are aligned onto: ``rate_hz`` and the stream files' time unit."""

    rate_hz: PositiveFloat
    time_unit: Annotated[StrictStr, _choice("s", "ns")] = "s"


class WindowSchema(_Strict):
    """Windows cut from each recording's timeline (seconds) and the presence a window needs."""

    length_s: PositiveFloat
    hop_s: PositiveFloat
    min_presence: Annotated[Float, Field(ge=0, le=1)] = 0.0


class PrepareSchema(_Strict):
    """A validated prepare schema (see the module docstring)."""

    name: Name = "prepared"
    modalities: dict[StrictStr, ModalitySchema] = Field(min_length=1)
    label: LabelSchema
    split: SplitSchema
    timeline: TimelineSchema | None = None
    window: WindowSchema | None = None

    @model_validator(mode="after")
    def _modes(self) -> PrepareSchema:
        if (self.timeline is None) != (self.window is None):
            raise ValueError("timeline and window go together: give both (rows are recordings "
                             "cut into windows) or neither (one example per row)")
        for name, m in self.modalities.items():
            if m.kind != "stream":
                continue
            if self.window is not None and m.channels is None:
                raise ValueError(f"modalities.{name}: a stream of a windowed schema needs "
                                 "channels (its shape comes from the window)")
            if self.window is None and m.shape is None:
                raise ValueError(f"modalities.{name}: a stream without a window needs shape "
                                 "[T, C] (and the columns <name>_start_s, <name>_end_s)")
        if self.window is not None:
            if not self.streams():
                raise ValueError("window needs at least one stream modality")
            for what in ("length_s", "hop_s"):
                self.steps(what)
        reserved = {self.label.column, self.split.column, "label", "group", "row", "start_s"}
        clash = sorted(reserved & set(self.modalities))
        if clash:
            raise ValueError(f"modalities: names {clash} clash with the label/group columns or "
                             "the stored metadata (label, group, row, start_s)")
        return self

    # ------------------------------------------------------------------ derived views
    def streams(self) -> list[str]:
        """Stream modalities read as whole recordings (windowed schemas only)."""
        if self.window is None:
            return []
        return [n for n, m in self.modalities.items() if m.kind == "stream"]

    def steps(self, what: str) -> int:
        """``window.length_s`` or ``window.hop_s`` in timeline steps (a whole number)."""
        seconds = getattr(self.window, what)
        steps = seconds * self.timeline.rate_hz
        if steps < 1 or abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"window.{what} * timeline.rate_hz must be a whole number >= 1, "
                             f"got {steps:g}")
        return round(steps)

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-example shape of a modality's raw input."""
        m = self.modalities[name]
        if m.kind == "stream" and self.window is not None:
            return (self.steps("length_s"), m.channels)
        if m.kind == "numeric":
            return tuple(m.shape or (1,))
        return tuple(m.shape or ())

    def manifest_schema(self) -> ManifestSchema:
        """The per-row fields (all but windowed streams) as a :class:`ManifestSchema`."""
        fields = {}
        for name, m in self.modalities.items():
            if name in self.streams():
                continue
            kind = m.kind
            fields[name] = ManifestField(kind, shape=tuple(m.shape or ()), required=m.required,
                                         sample_rate=m.sample_rate)
        fields[self.label.column] = ManifestField("label", classes=tuple(self.label.classes))
        return ManifestSchema(fields)

    def class_names(self) -> list[str]:
        return [str(c) for c in self.label.classes]

    def modality_specs(self) -> dict[str, ModalitySpec]:
        """The model's raw inputs, as the built-in datasets describe theirs."""
        specs = {}
        for name, m in self.modalities.items():
            options = dict(m.options)
            if m.kind == "audio":
                options = {"sample_rate": m.sample_rate, **options}
            if m.kind == "stream" and self.timeline is not None:
                options = {"rate_hz": self.timeline.rate_hz, **options}
            dtype = {"image": "uint8", "text": "string"}.get(m.kind, "float32")
            specs[name] = ModalitySpec(name, _MODEL_KIND[m.kind], self.shape(name), dtype,
                                       options)
        return specs

    def split_of(self, group: Any) -> str:
        """The split of a group value: its ``assign`` entry, else by hash (see module docs)."""
        key = str(group)
        for split, groups in self.split.assign.items():
            if key in map(str, groups):
                return split
        digest = hashlib.sha256(f"{self.split.seed}:{key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        total = 0.0
        for split in SPLITS:
            total += self.split.fractions[split]
            if u < total:
                return split
        return max(SPLITS, key=lambda s: self.split.fractions[s])  # rounding at u -> 1


def load_schema(path: str | Path) -> PrepareSchema:
    """Read and validate a schema YAML file.

    Raises:
        SchemaError: one line naming the file, the field path and the fix.

    Example:
        schema = load_schema("data_pipelines/schemas/example.yaml")
    """
    path = Path(path)
    data = read_yaml_mapping(path, "schema file", "--schema", SchemaError)
    try:
        return PrepareSchema.model_validate(data)
    except ValidationError as err:
        raise SchemaError(f"schema file {path}: {format_errors(err)}") from None


def format_errors(err: ValidationError) -> str:
    """pydantic errors as ``field 'a.b'=value: problem`` parts, one per field."""
    parts: dict[str, str] = {}
    for item in err.errors():
        loc = [str(p) for p in item["loc"] if not str(p).startswith("function-")]
        loc = [p for p in loc if p not in ("str", "int", "constrained-str", "float")]
        path = ".".join(loc) or "schema"
        message = item["msg"].removeprefix("Value error, ")
        shown = "" if item["type"] in ("missing", "value_error") else f"={item.get('input')!r}"
        parts.setdefault(path, f"field {path!r}{shown}: {message}")
    return "; ".join(parts.values())
