"""Trained single-modality models as frozen parts of a late fusion (stacking on unimodal models).

A late fusion's ``unimodal`` argument names, per modality, a run folder (or its ``model.keras``)
trained on that modality alone with a late fusion (``modalities=[m] fusion=late_mean``). Its
encoder and its per-modality head are what :class:`~mmkeras.models.backbone.FusionBackbone`
copies and freezes; :func:`load_unimodal` reads and checks them.

Example:
    source = load_unimodal("runs/vibration-only", "vibration", num_classes=4)
    source.encoder  # {"name": "conv1d", "embed_dim": 64, "filters": [32, 64, 64], ...}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmkeras.registry import split_spec

# Layer settings that are not an encoder's own arguments (the backbone sets return_tokens and
# return_pooled).
_LAYER_KEYS = ("name", "trainable", "dtype", "return_tokens", "return_pooled")


@dataclass(frozen=True)
class UnimodalSource:
    """What a late fusion takes from one trained single-modality model."""

    path: Path
    encoder: dict[str, Any]  # {"name": registered name, **constructor arguments}
    encoder_weights: list[np.ndarray]
    head_weights: list[np.ndarray]
    state: dict[str, Any]  # the modality's fitted preprocessing state


def load_unimodal(path: str | Path, modality: str, num_classes: int | None) -> UnimodalSource:
    """Read the encoder and head of the model trained on ``modality`` alone at ``path``.

    ``path`` is a run folder or a ``.keras`` file. Raises ``ValueError`` naming the path when it
    is not a single-modality late-fusion model of ``modality`` with ``num_classes`` classes.
    The file is read once per modification time.
    """
    path = Path(path)
    file = path / "model.keras" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"unimodal model of {modality!r}: {file} does not exist; "
                         f"train it with modalities=[{modality}] fusion=late_mean and pass its "
                         f"run folder")
    return _load(file.resolve(), file.stat().st_mtime_ns, modality, num_classes)


@functools.lru_cache(maxsize=16)
def _load(file: Path, mtime_ns: int, modality: str, num_classes: int | None) -> UnimodalSource:
    from mmkeras.layers import load_model
    from mmkeras.models.preprocessor import MultimodalPreprocessor
    from mmkeras.models.task import FusionClassifier

    how = f"train it with modalities=[{modality}] fusion=late_mean and pass its run folder"
    model = load_model(file)
    tasks = [layer for layer in model.layers if isinstance(layer, FusionClassifier)]
    preprocessors = [layer for layer in model.layers
                     if isinstance(layer, MultimodalPreprocessor)]
    if len(tasks) != 1 or len(preprocessors) != 1:
        raise ValueError(f"unimodal model of {modality!r}: {file} is not an mmkeras run model "
                         f"(preprocessor and task); {how}")
    backbone = tasks[0].backbone
    if list(backbone.modalities) != [modality] or backbone.fusion_level != "late":
        raise ValueError(
            f"unimodal model of {modality!r}: {file} has modalities {list(backbone.modalities)} "
            f"and a {backbone.fusion_level} fusion; it must have {modality!r} alone and a late "
            f"fusion; {how}")
    if num_classes is not None and tasks[0].num_classes != num_classes:
        raise ValueError(f"unimodal model of {modality!r}: {file} predicts "
                         f"{tasks[0].num_classes} classes, this model {num_classes}")
    encoder = backbone.get_layer(f"{modality}_encoder")
    config = {k: v for k, v in encoder.get_config().items() if k not in _LAYER_KEYS}
    head = backbone.get_layer("fusion").heads[0]
    return UnimodalSource(
        path=file,
        encoder={"name": type(encoder).registered_name, **config},
        encoder_weights=[np.array(w) for w in encoder.get_weights()],
        head_weights=[np.array(w) for w in head.get_weights()],
        state=preprocessors[0].state[modality],
    )


def merge_encoder_spec(given: str | dict | None, saved: dict[str, Any], modality: str) -> dict:
    """The saved encoder spec, after checking that the configured one (if any) agrees with it."""
    if given is not None:
        name, kwargs = split_spec(given, f"encoder of {modality}")
        differs = {k: v for k, v in kwargs.items() if saved.get(k) != v}
        if name != saved["name"] or differs:
            raise ValueError(
                f"encoders.{modality} = {given!r} disagrees with the encoder of its unimodal "
                f"model ({saved!r}); leave encoders.{modality} out to use the unimodal one")
    return dict(saved)


def same_state(a: Any, b: Any, rtol: float = 1e-6) -> bool:
    """Whether two preprocessing states are equal (floats within ``rtol``).

    Example:
        >>> same_state({"center": [1.0, 2.0]}, {"center": [1.0, 2.0000000001]})
        True
        >>> same_state({"vocabulary": ["a"]}, {"vocabulary": ["b"]})
        False
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k], rtol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_state(x, y, rtol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return bool(np.isclose(a, b, rtol=rtol, atol=0.0))
    return a == b
