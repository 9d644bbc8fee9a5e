"""Dataset definitions, one module per dataset; each exposes ``load(**args) -> MultimodalDataset``.

Example:
    >>> from data_pipelines import load_dataset
    >>> ds = load_dataset("machine", n_machines=8)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def available() -> list[str]:
    """Names of the dataset modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_dataset(name: str, **kwargs: Any):
    """Import ``data_pipelines.<name>`` and return its ``load(**kwargs)``."""
    if name not in available():
        raise ValueError(f"unknown dataset {name!r}; available: {available()}")
    return importlib.import_module(f"data_pipelines.{name}").load(**kwargs)
