"""Fusions: every module in this folder is imported, so its
``@register_fusion`` runs (see :mod:`mmkeras.fusion.base` for the contract)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
