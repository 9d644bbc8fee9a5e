"""Every registered fusion: the layer harness, the presence contract, weights, edge cases."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import keras
import numpy as np
import pytest

import mmkeras.fusion
from mmkeras.fusion.base import LEVELS, Fusion
from mmkeras.fusion.gated import GatedFusion
from mmkeras.registry import FUSIONS
from tests.layer_harness import run_layer_test

for _module in pkgutil.iter_modules(mmkeras.fusion.__path__):
    if _module.name != "model":  # the builder, not a fusion
        importlib.import_module(f"mmkeras.fusion.{_module.name}")

BATCH = 8
NUM_CLASSES = 3
# Every constructor argument of every fusion, with values that differ from the defaults.
KWARGS = {
    "early": {"embed_dim": 8, "bands": 4},
    "early_timeline": {"embed_dim": 8, "steps": 12, "conv_layers": 1, "kernel_size": 5},
    "concat": {"embed_dim": 8},
    "sum": {"embed_dim": 8},
    "gated": {"embed_dim": 8},
    "attention": {"embed_dim": 8},
    "tensor": {"embed_dim": 8, "dim": 3},
    "low_rank_tensor": {"embed_dim": 8, "rank": 2},
    "cross_attention": {"embed_dim": 8, "num_heads": 2},
    "late_mean": {"embed_dim": 8, "num_classes": NUM_CLASSES},
    "late_weighted": {"embed_dim": 8, "num_classes": NUM_CLASSES},
    "late_product": {"embed_dim": 8, "num_classes": NUM_CLASSES},
    "late_stacking": {"embed_dim": 8, "num_classes": NUM_CLASSES},
}
NAMES = FUSIONS.names()


def encoded_features(seed: int = 0, dim: int = 6) -> list[dict[str, np.ndarray]]:
    """Encoder outputs of 3 modalities: 5, 1 and 7 tokens; the third with padded tokens."""
    rng = np.random.default_rng(seed)
    features = []
    for tokens in (5, 1, 7):
        mask = np.ones((BATCH, tokens), "float32")
        if tokens == 7:
            mask[:, 4:] = 0.0
            mask[::3, 2:] = 0.0
        features.append({
            "tokens": rng.normal(size=(BATCH, tokens, dim)).astype("float32"),
            "mask": mask,
            "pooled": rng.normal(size=(BATCH, dim)).astype("float32"),
        })
    return features


def raw_features(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Standardised raw inputs of 3 modalities: a long series, a short series, a vector."""
    rng = np.random.default_rng(seed)
    shapes = [(BATCH, 64, 3), (BATCH, 16, 2), (BATCH, 5)]
    return [{"raw": rng.normal(size=shape).astype("float32")} for shape in shapes]


def features_for(name: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return raw_features(seed) if FUSIONS.get(name).level == "early" else encoded_features(seed)


def mixed_presence() -> np.ndarray:
    """Each modality absent in some examples, every example with at least one present."""
    presence = np.ones((BATCH, 3), "float32")
    presence[1, 0] = presence[2, 1] = presence[3, 2] = 0.0
    presence[4, :2] = presence[5, 1:] = 0.0
    presence[6, [0, 2]] = 0.0
    return presence


def expected_shapes(name: str) -> dict:
    cls = FUSIONS.get(name)
    size = {"early": 16, "concat": 18, "sum": 6, "gated": 6, "attention": 6}.get(name, 8)
    if cls.level == "late":
        size = NUM_CLASSES
    shapes = {"fused": (None, size)}
    if cls.returns_weights:
        shapes["modality_weights"] = (None, 3)
    return shapes


def run(layer: keras.layers.Layer, features: list, presence: np.ndarray) -> dict:
    out = layer(features, presence)
    return {key: keras.ops.convert_to_numpy(value) for key, value in out.items()}


def test_every_fusion_is_registered_with_a_level_and_a_paper():
    assert {"early", "early_timeline", "concat", "sum", "gated", "attention", "tensor",
            "low_rank_tensor", "cross_attention", "late_mean", "late_weighted", "late_product",
            "late_stacking"} <= set(NAMES)
    for name in NAMES:
        cls = FUSIONS.get(name)
        assert issubclass(cls, Fusion) and cls.level in LEVELS and cls.paper, name


@pytest.mark.parametrize("name", NAMES)
def test_test_kwargs_cover_every_constructor_argument(name):
    params = inspect.signature(FUSIONS.get(name).__init__).parameters
    arguments = {p for p, v in params.items() if p != "self" and v.kind != v.VAR_KEYWORD}
    assert arguments == set(KWARGS[name]), "KWARGS must name every constructor argument"


@pytest.mark.parametrize("name", NAMES)
def test_layer_harness(name):
    run_layer_test((FUSIONS.get(name), KWARGS[name]), [features_for(name), mixed_presence()],
                   expected_shapes=expected_shapes(name))


@pytest.mark.parametrize("name", NAMES)
def test_absent_modality_changes_no_output(name):
    layer = FUSIONS.build({"name": name, **KWARGS[name]})
    presence = mixed_presence()
    features = features_for(name)
    reference = run(layer, features, presence)
    rng = np.random.default_rng(1)
    for j in range(3):
        absent = presence[:, j] == 0
        perturbed = [dict(f) for f in features]
        for key, value in perturbed[j].items():
            value = value.copy()
            if key == "mask":
                value[absent] = rng.integers(0, 2, size=value[absent].shape)
            else:
                value[absent] += rng.normal(scale=1e6, size=value[absent].shape)
            perturbed[j][key] = value
        out = run(layer, perturbed, presence)
        for key in reference:
            np.testing.assert_array_equal(out[key], reference[key], err_msg=f"{name}, modality {j}")


@pytest.mark.parametrize("name", NAMES)
def test_one_present_modality_is_finite(name):
    layer = FUSIONS.build({"name": name, **KWARGS[name]})
    presence = np.eye(3, dtype="float32")[np.arange(BATCH) % 3]
    for key, value in run(layer, features_for(name), presence).items():
        assert np.all(np.isfinite(value)), f"{name}: {key} not finite"


@pytest.mark.parametrize("name", [n for n in NAMES if FUSIONS.get(n).returns_weights])
def test_modality_weights_are_zero_for_absent_and_sum_to_one(name):
    presence = mixed_presence()
    weights = run(FUSIONS.build({"name": name, **KWARGS[name]}), features_for(name),
                  presence)["modality_weights"]
    assert weights.shape == (BATCH, 3) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights[presence == 0], 0.0)
    assert np.all(weights[presence == 1] > 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if FUSIONS.get(n).level == "late"])
def test_late_fusions_output_probabilities(name):
    probabilities = run(FUSIONS.build({"name": name, **KWARGS[name]}), features_for(name),
                        mixed_presence())["fused"]
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


class ForgetfulGatedFusion(GatedFusion):
    """Gated fusion with a ``temperature`` that its ``get_config`` forgets (the old bug)."""

    def __init__(self, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature


def test_harness_catches_a_config_that_drops_an_argument():
    with pytest.raises(AssertionError, match="drops constructor argument 'temperature'"):
        run_layer_test((ForgetfulGatedFusion, {"embed_dim": 8, "temperature": 2.0}),
                       [encoded_features(), mixed_presence()])
