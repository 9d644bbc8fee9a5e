"""Run configuration: a typed schema, YAML files and ``key=value`` overrides.

Defaults, then the ``--config`` YAML file, then each ``key=value`` override (values parsed as
YAML, so ``modalities=[audio]`` is a list and ``dataset_args.n_machines=8`` reaches into the
nested mapping) are merged and validated by a pydantic schema before any work starts. Every
problem is a :class:`ConfigError` whose one-line message names the field path, the bad value and
the fix (the closest valid name for typos). Float fields accept numeric strings (PyYAML reads
``1e-3`` as a string); booleans must be booleans and integers integers; ranges are checked;
``dataset_args`` are checked against the dataset's ``load()`` signature (names and types).

Example:
    >>> cfg = resolve_config(None, ["fusion=gated", "epochs=3", "learning_rate=1e-3"])
    >>> cfg.fusion, cfg.epochs, cfg.learning_rate
    ('gated', 3, 0.001)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from mmkeras.data.fs import utf8_text

DEFAULT_FUSION = "sum"  # chosen on validation loss over all fusions (README, Models)


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the field and the fix."""


def _closest(name: str, valid: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _number(value: Any) -> Any:
    """Floats accept ints and numeric strings (``"1e-3"``); booleans and other text fail."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value}")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number (e.g. 0.001), got {value!r}") from None
    if isinstance(value, int):
        return float(value)
    return value


def _choice(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown value {value!r}{_closest(value, choices)} "
                             f"Choose one of: {', '.join(choices)}")
        return value

    return AfterValidator(check)


Float = Annotated[float, BeforeValidator(_number), Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Name = Annotated[StrictStr, Field(min_length=1)]
Spec = StrictStr | dict[str, Any]


class TaskConfig(BaseModel):
    """One prediction task: its kind and its weight alpha in the total loss."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[StrictStr, _choice("classification", "regression")] = "classification"
    loss_weight: PositiveFloat = 1.0
    # ``label`` only: weight of the auxiliary heads, one per modality on its encoder's pooled
    # output, each trained on the main label (0: no such heads; see FusionClassifier)
    unimodal_loss_weight: NonNegativeFloat = 0.0

    @model_serializer(mode="wrap")
    def _without_unused_heads(self, handler: Any) -> dict[str, Any]:
        """Leave ``unimodal_loss_weight`` out when 0 (configs without it stay as they were)."""
        data = handler(self)
        if not self.unimodal_loss_weight:
            data.pop("unimodal_loss_weight", None)
        return data


class Config(BaseModel):
    """Everything a training run needs; written to ``config.yaml`` in the run folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Name = "machine"
    dataset: Name = "machine"
    dataset_args: dict[str, Any] = Field(default_factory=dict)
    modalities: list[Name] | None = None
    fusion: Spec = DEFAULT_FUSION
    encoders: dict[str, Spec] = Field(default_factory=dict)
    tasks: dict[str, TaskConfig] | None = None
    augment: dict[str, Any] = Field(default_factory=dict)
    representation_penalty: NonNegativeFloat = 0.0
    embed_dim: PositiveInt = 64
    dropout: Fraction = 0.3
    modality_dropout: Fraction = 0.3
    weight_decay: NonNegativeFloat = 0.01
    # momentum of the optimizer's exponential moving average of the weights, which validation,
    # early stopping, checkpoints and the final model use (0: no average)
    ema_momentum: Fraction = 0.0
    early_stopping: NonNegativeInt = 5
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    learning_rate: PositiveFloat = 2e-3
    lr_schedule: Annotated[StrictStr, _choice("constant", "cosine")] = "constant"
    lr_scale_with_replicas: StrictBool = False
    mixed_precision: Annotated[
        StrictStr, _choice("none", "mixed_float16", "mixed_bfloat16")
    ] = "none"
    seed: NonNegativeInt = 0
    strategy: Annotated[StrictStr, _choice("mirrored", "multi_worker", "default")] = "mirrored"
    model_name: Name = "mmkeras_model"
    model_version: PositiveInt = 1
    output: Name | None = None
    runs_dir: Name = "runs"
    strict: StrictBool = False
    verbose: Annotated[StrictInt, Field(ge=0, le=2)] = 1

    @field_validator("name", "model_name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"{value!r} names a folder (the run's, the export's): use letters, "
                             "digits, '_', '-' and '.', starting with a letter or digit")
        return value

    @field_validator("modalities", mode="before")
    @classmethod
    def _one_modality(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and not value:
            raise ValueError("is empty: name at least one modality, or leave it unset for all")
        if isinstance(value, list) and len(set(map(str, value))) < len(value):
            raise ValueError("names a modality twice: name each once")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from data_pipelines import available

        if value not in available():
            raise ValueError(f"unknown dataset {value!r}{_closest(value, available())} "
                             f"Available: {', '.join(available())}")
        return value

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: Any) -> Any:
        _check_spec(value, "fusion", "fusion")
        return value

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, value: dict[str, Any]) -> dict[str, Any]:
        for modality, spec in value.items():
            _check_spec(spec, "encoder", f"encoders.{modality}")
        return value

    @field_validator("tasks")
    @classmethod
    def _unimodal_heads_on_label(cls, value: dict[str, TaskConfig] | None) -> Any:
        for name, task in (value or {}).items():
            if name != "label" and task.unimodal_loss_weight:
                raise ValueError(f"tasks.{name}.unimodal_loss_weight: only the main task "
                                 f"('label') has unimodal heads")
        return value

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_settings(cls, value: Any) -> Any:
        from mmkeras.data.augment import check_settings

        return check_settings(value)

    @model_validator(mode="after")
    def _dataset_args_match_load(self) -> Config:
        _check_dataset_args(self.dataset, self.dataset_args)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-safe) of every field."""
        return self.model_dump(mode="python")


def _registry(kind: str):
    """``mmkeras.registry.FUSIONS`` / ``ENCODERS`` after importing the modules that fill it."""
    from mmkeras import registry

    importlib.import_module("mmkeras.fusion" if kind == "fusion" else "mmkeras.encoders")
    return registry.FUSIONS if kind == "fusion" else registry.ENCODERS


def _check_spec(spec: Any, kind: str, where: str) -> None:
    """A registered name, or ``{name: ..., kwarg: value}`` with the class's keyword arguments."""
    from mmkeras.registry import split_spec

    try:
        name, kwargs = split_spec(spec, kind)
        cls = _registry(kind).get(name)
    except ValueError as err:
        raise ValueError(f"config field {where!r}={spec!r}: {err}") from None
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "args", "kwargs")] + ["dtype", "trainable"]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"config field {where + '.' + key!r}: {kind} {name!r} has no "
                             f"argument {key!r}{_closest(key, accepted)} "
                             f"Arguments: {', '.join(accepted)}")


def _check_dataset_args(dataset: str, args: dict[str, Any]) -> None:
    """Names and types of ``dataset_args`` against ``data_pipelines.<dataset>.load`` (not run)."""
    load = importlib.import_module(f"data_pipelines.{dataset}").load
    params = inspect.signature(load).parameters
    hints = typing.get_type_hints(load)
    valid = [p for p in params if p != "strict"]
    for key, value in args.items():
        path = f"dataset_args.{key}"
        if key == "strict":
            raise ConfigError(f"config field {path!r}: set the top-level field 'strict' "
                              "(or --strict) instead")
        if key not in params:
            raise ConfigError(f"config field {path!r}: {dataset}'s load() has no argument "
                              f"{key!r}{_closest(key, valid)} Valid: {', '.join(valid)}")
        hint = hints.get(key)
        if hint is None:
            continue
        try:
            args[key] = _dataset_arg_adapter(hint).validate_python(value)
        except ValidationError as err:
            raise ConfigError(_format(err, prefix=(path,), values={path: value})) from None


def _dataset_arg_adapter(hint: Any) -> TypeAdapter:
    """Strict validation of one ``load()`` argument; floats also take numeric strings."""
    args = typing.get_args(hint)
    if hint is float or (float in args and type(None) in args and len(args) == 2):
        number = Annotated[float, BeforeValidator(_number), Field(strict=True)]
        return TypeAdapter(number if hint is float else number | None)
    return TypeAdapter(hint, config=ConfigDict(strict=True))


def _format(err: ValidationError, prefix: tuple = (), values: dict[str, Any] | None = None) -> str:
    """One line per pydantic error, joined: ``config field 'a.b'=value: problem``."""
    parts = []
    for item in err.errors():
        loc = [str(p) for p in (*prefix, *item["loc"]) if not str(p).startswith("function-")]
        loc = [p for p in loc if p not in ("str", "dict[str,any]", "list[str]", "constrained-str")]
        path = ".".join(loc) or "config"
        message = item["msg"].removeprefix("Value error, ")
        if message.startswith("config field "):  # already names its field (dataset_args)
            parts.append(message)
            continue
        if item["type"] == "extra_forbidden":
            model = TaskConfig if loc[0] == "tasks" else Config
            valid = list(model.model_fields)
            message = f"unknown field{_closest(loc[-1], valid)} Valid: {', '.join(valid)}"
        value = item.get("input")
        if item["type"] == "bool_type" and isinstance(value, str):
            message += ": write true or false"
        shown = "" if item["type"] in ("extra_forbidden", "missing") else f"={value!r}"
        parts.append(f"config field {path!r}{shown}: {message}")
    # a union reports each alternative; keep the first message per field
    seen: dict[str, str] = {}
    for part in parts:
        seen.setdefault(part.split(":", 1)[0], part)
    return "; ".join(seen.values())


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    target = data
    for i, key in enumerate(keys[:-1]):
        if i == 0 and key not in target:  # start from the field's default
            target[key] = Config.model_fields[key].get_default(call_default_factory=True)
        current = target.get(key)
        if isinstance(current, str):  # fusion=concat, then fusion.dropout=0.1 -> a mapping
            target[key] = current = {"name": current}
        elif current is None:
            target[key] = current = {}
        if not isinstance(current, dict):
            raise ConfigError(f"override {dotted}: {'.'.join(keys[: i + 1])!r} is "
                              f"{current!r}, not a mapping")
        target = current
    target[keys[-1]] = value


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's silent traps: a duplicate key, an integer with a
    leading zero (octal: ``0777`` is 511) or a sexagesimal number (``1:30`` is 90) is an error
    naming the line instead of a value nobody meant, and only ``true``/``false`` are booleans
    (YAML 1.2): ``yes``, ``no``, ``on`` and ``off`` stay text, so class names such as
    ``[yes, no, on, off]`` keep their meaning."""

    yaml_implicit_resolvers: typing.ClassVar[dict] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line "
                    f"{first.start_mark.line + 1}): keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        self._check_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        self._check_number(node)
        return super().construct_yaml_float(node)

    @staticmethod
    def _check_number(node: yaml.ScalarNode) -> None:
        text = node.value.replace("_", "").lstrip("+-")
        if ":" in text:
            reading = "a base-60 number"
        elif re.fullmatch(r"0[0-7]+", text):
            reading = f"octal ({int(text, 8)})"
        else:
            return
        raise yaml.constructor.ConstructorError(
            None, None, f"ambiguous number {node.value!r}: YAML 1.1 reads it as {reading}; "
            "quote it for text, or write the number without leading zeros or colons",
            node.start_mark)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and octal/base-60 numbers, and reads
    only ``true``/``false`` as booleans (``_Loader``).

    Example:
        >>> load_yaml("lr: 1e-3\\nepochs: 10\\nclasses: [yes, no]\\nshuffle: true")
        {'lr': '1e-3', 'epochs': 10, 'classes': ['yes', 'no'], 'shuffle': True}
    """
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no Python objects


def read_yaml_mapping(path: Path, what: str = "config file", option: str = "--config",
                      error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """The mapping at the top of a YAML file; ``error`` names the file, line and problem."""
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a YAML file: check {option}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist: check {option}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise error(f"{what} {path} cannot be read ({err.strerror or err}): check {option}"
                    ) from None
    text = utf8_text(raw, f"{what} {path}", "save the file as UTF-8", error)
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error(f"{what} {where}: YAML syntax error: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{what} {path}: top level must be a mapping of field: value")
    return loaded


def _known(key: str, where: str) -> None:
    known = list(Config.model_fields)
    if key not in known:
        raise ConfigError(f"{where}: unknown field {key!r}{_closest(key, known)} "
                          f"Valid: {', '.join(known)}")


def resolve_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file and overrides.

    Raises:
        ConfigError: one line naming the file, override or field and how to fix it.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_mapping(Path(path))
        for key in loaded:
            _known(str(key), f"config file {path}")
        data.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (example: epochs=5)")
        _known(key.split(".")[0], f"override {item!r}")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise ConfigError(f"override {item!r}: {problem} (values are parsed as YAML; "
                              "quote strings)") from None
        _set(data, key, value)
    try:
        return Config(**data)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None
    except ConfigError:
        raise
    except ValueError as err:  # from a registry or the dataset check outside pydantic's errors
        raise ConfigError(str(err)) from None


def config_yaml(cfg: Config) -> str:
    """The resolved configuration as YAML, as written to ``config.yaml``."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)

