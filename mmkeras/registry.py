"""Registries of encoders and fusions: adding one is one file with a decorator.

A registered class is also registered with Keras for serialisation (package ``mmkeras``), so a
model that uses it saves to and loads from ``model.keras``. Configs select by name, with keyword
arguments: ``fusion: {name: tensor, rank: 4}`` or ``encoders: {audio: {name: spectrogram_cnn}}``.

Example:
    >>> import keras
    >>> from mmkeras.registry import Registry
    >>> things = Registry("thing")
    >>> @things.register("dense_thing")
    ... class DenseThing(keras.layers.Layer):
    ...     def __init__(self, units=4, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.units = units
    >>> things.build({"name": "dense_thing", "units": 8}).units
    8
    >>> things.get("dense_thnig")
    Traceback (most recent call last):
    ...
    ValueError: unknown thing 'dense_thnig'; did you mean 'dense_thing'? Registered: dense_thing
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import keras


class Registry:
    """Name -> class mapping for one kind of building block."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: register under ``name`` (and with Keras serialisation)."""

        def decorator(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered to "
                                 f"{self._classes[name].__qualname__}")
            cls = keras.saving.register_keras_serializable(package="mmkeras")(cls)
            cls.registered_name = name
            self._classes[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> type:
        """The class registered as ``name``; unknown names fail with the closest valid one."""
        if name not in self._classes:
            close = difflib.get_close_matches(str(name), self._classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ValueError(
                f"unknown {self.kind} {name!r}{hint} Registered: {', '.join(self.names())}"
            )
        return self._classes[name]

    def build(self, spec: str | dict[str, Any], **defaults: Any) -> Any:
        """Instantiate from ``"name"`` or ``{"name": ..., **kwargs}``; ``defaults`` fill gaps."""
        name, kwargs = split_spec(spec, self.kind)
        return self.get(name)(**{**defaults, **kwargs})

    def __contains__(self, name: object) -> bool:
        return name in self._classes


def split_spec(spec: str | dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": ..., **kwargs}`` -> ``(name, kwargs)``, with clear errors."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ValueError(f"{kind} must be a name or a mapping with a 'name' key, got {spec!r}")


ENCODERS = Registry("encoder")
FUSIONS = Registry("fusion")
register_encoder = ENCODERS.register
register_fusion = FUSIONS.register
