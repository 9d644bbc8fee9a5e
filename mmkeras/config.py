"""Run configuration: defaults, YAML files and ``key=value`` overrides.

A configuration is a flat dataclass with one nested mapping, ``dataset_args``, handed to the
dataset definition. Files and overrides are applied in order: defaults, then ``--config`` YAML,
then each ``key=value`` (values parsed as YAML, so ``modalities=[audio]`` is a list and
``dataset_args.n_machines=8`` reaches into the nested mapping).

Example:
    >>> cfg = resolve_config(None, ["fusion=late", "epochs=3"])
    >>> cfg.fusion, cfg.epochs
    ('late', 3)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FUSIONS = ("early", "intermediate", "late")


@dataclass
class Config:
    """Everything a training run needs; written to ``config.yaml`` in the run folder."""

    name: str = "machine"
    dataset: str = "machine"
    dataset_args: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] | None = None
    fusion: str = "intermediate"
    embed_dim: int = 64
    dropout: float = 0.3
    modality_dropout: float = 0.3
    weight_decay: float = 0.01
    early_stopping: int = 5
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    strategy: str = "mirrored"
    model_name: str = "mmkeras_model"
    model_version: int = 1
    output: str | None = None
    runs_dir: str = "runs"
    strict: bool = False
    verbose: int = 1

    def validate(self) -> Config:
        """Check value ranges; raise ``ValueError`` naming the field and the fix."""
        if self.fusion not in FUSIONS:
            raise ValueError(f"config field 'fusion'={self.fusion!r}: choose one of {FUSIONS}")
        for name in ("epochs", "batch_size", "embed_dim", "model_version"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "modality_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                value = getattr(self, name)
                raise ValueError(f"config field {name!r} must be in [0, 1), got {value}")
        if self.modalities is not None and not self.modalities:
            raise ValueError("config field 'modalities' is empty: name at least one modality")
        if self.strategy not in ("mirrored", "multi_worker", "default"):
            raise ValueError(
                f"config field 'strategy'={self.strategy!r}: use mirrored, multi_worker or default"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a mapping")
    target[keys[-1]] = value


def resolve_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file and overrides."""
    known = {f.name for f in dataclasses.fields(Config)}
    data: dict[str, Any] = Config().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: top level must be a mapping of field: value")
        unknown = set(loaded) - known
        if unknown:
            raise ValueError(
                f"config file {path}: unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
        data.update(loaded)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (example: epochs=5)")
        key, raw = item.split("=", 1)
        if key.split(".")[0] not in known:
            raise ValueError(f"override {item!r}: unknown field {key!r}; known: {sorted(known)}")
        _set(data, key, yaml.safe_load(raw))
    if isinstance(data.get("modalities"), str):
        data["modalities"] = [data["modalities"]]
    return Config(**data).validate()
