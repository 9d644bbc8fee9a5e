"""Fusion layers (early, intermediate, late) and the model builder that wires them."""

from mmkeras.fusion.early import EarlyFusion
from mmkeras.fusion.intermediate import IntermediateFusion
from mmkeras.fusion.late import LateFusion
from mmkeras.fusion.modality_dropout import ModalityDropout
from mmkeras.fusion.model import build_fusion_model

__all__ = [
    "EarlyFusion",
    "IntermediateFusion",
    "LateFusion",
    "ModalityDropout",
    "build_fusion_model",
]
