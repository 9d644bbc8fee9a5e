"""Models: preprocessor, backbone (encoders + fusion), task heads, and the raw-input model.

:func:`build_models` wires them for a dataset: ``preprocessor`` runs in ``tf.data`` while training,
``task`` trains on its outputs, and :func:`end_to_end` composes both for inference and export.
"""

from __future__ import annotations

from typing import Any

import mmkeras.encoders  # registers the encoders
import mmkeras.fusion  # noqa: F401  registers the fusions
from mmkeras.data.dataset import ModalitySpec
from mmkeras.data.preprocessing import is_spectral
from mmkeras.models.backbone import FusionBackbone
from mmkeras.models.end_to_end import InferenceModel, end_to_end
from mmkeras.models.preprocessor import MultimodalPreprocessor, spec_to_dict
from mmkeras.models.task import FusionClassifier, has_unimodal_heads
from mmkeras.models.unimodal import load_unimodal, same_state
from mmkeras.registry import split_spec

INPUT_KINDS = {"timeseries": "sequence", "audio": "sequence", "image": "image",
               "text": "tokens", "tabular": "vector"}

__all__ = ["FusionBackbone", "FusionClassifier", "InferenceModel", "MultimodalPreprocessor",
           "build_models", "end_to_end"]


def backbone_modalities(preprocessor: MultimodalPreprocessor) -> dict[str, dict[str, Any]]:
    """What each encoder receives, from the preprocessor's specs, state and output shapes."""
    features = preprocessor.feature_specs()
    described: dict[str, dict[str, Any]] = {}
    for name, spec in preprocessor.modalities.items():
        m: dict[str, Any] = {
            "input_kind": INPUT_KINDS[spec.kind],
            "shape": list(features[name].shape[1:]),
            "dtype": str(features[name].dtype),
        }
        if is_spectral(spec):
            m["spectral"] = True
        if spec.kind == "text":
            m["vocab_size"] = len(preprocessor.state[name]["vocabulary"]) + 2
        if spec.kind == "image" and spec.options.get("augment"):
            m["augment"] = dict(spec.options["augment"])
        if name in preprocessor.step_masks:
            m["step_mask"] = True
        described[name] = m
    return described


def build_models(
    modalities: dict[str, ModalitySpec],
    state: dict[str, dict[str, Any]],
    num_classes: int,
    *,
    encoders: dict[str, str | dict] | None = None,
    fusion: str | dict = "concat",
    embed_dim: int = 64,
    dropout: float = 0.3,
    modality_dropout: float = 0.0,
    tasks: dict[str, dict[str, Any]] | None = None,
    representation_penalty: float = 0.0,
    seed: int | None = None,
    step_masks: list[str] | None = None,
) -> tuple[MultimodalPreprocessor, FusionClassifier]:
    """The fitted preprocessor and the task model for these modalities.

    ``step_masks``: time-series modalities that take a ``<modality>_step_mask`` input (see
    :class:`MultimodalPreprocessor`). A late fusion's ``unimodal`` models must have been
    fitted on the same preprocessing statistics as ``state``.

    Example:
        pre, task = build_models(dataset.modalities, state, 4, fusion="gated")
        model = end_to_end(pre, task)
    """
    _, fusion_kwargs = split_spec(fusion, "fusion")
    for name, path in (fusion_kwargs.get("unimodal") or {}).items():
        if name in state and not same_state(load_unimodal(path, name, num_classes).state,
                                            state[name]):
            raise ValueError(f"unimodal model of {name!r} ({path}) was fitted on other "
                             f"preprocessing statistics than this run: train it on the same "
                             f"dataset and training split")
    preprocessor = MultimodalPreprocessor(
        {n: spec_to_dict(s) for n, s in modalities.items()}, state, step_masks=step_masks,
        name="preprocessor"
    )
    backbone = FusionBackbone(
        backbone_modalities(preprocessor), encoders=encoders, fusion=fusion,
        embed_dim=embed_dim, modality_dropout=modality_dropout, num_classes=num_classes,
        seed=seed, keep_pooled=has_unimodal_heads(tasks, len(modalities)), name="backbone",
    )
    task = FusionClassifier(backbone, num_classes, tasks=tasks, dropout=dropout,
                            representation_penalty=representation_penalty, name="task")
    return preprocessor, task
