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
    "early_timeline": {"embed_dim": 8, "steps": 12, "conv_layers": 1, "kernel_size": 5,
                       "encoder": {"name": "conv1d", "filters": [4, 8], "kernel_size": 3}},
    "concat": {"embed_dim": 8},
    "sum": {"embed_dim": 8},
    "gated": {"embed_dim": 8},
    "attention": {"embed_dim": 8},
    "tensor": {"embed_dim": 8, "dim": 3},
    "low_rank_tensor": {"embed_dim": 8, "rank": 2},
    "cross_attention": {"embed_dim": 8, "num_heads": 2},
    "late_mean": {"embed_dim": 8, "num_classes": NUM_CLASSES, "unimodal": {"a": "runs/a"}},
    "late_weighted": {"embed_dim": 8, "num_classes": NUM_CLASSES, "unimodal": {"a": "runs/a"}},
    "late_product": {"embed_dim": 8, "num_classes": NUM_CLASSES, "unimodal": {"a": "runs/a"}},
    "late_stacking": {"embed_dim": 8, "num_classes": NUM_CLASSES, "unimodal": {"a": "runs/a"},
                      "stack_on": "probabilities"},
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


def test_only_token_reading_fusions_ask_for_tokens():
    assert [n for n in NAMES if FUSIONS.get(n).uses_tokens] == ["cross_attention"]
    pooled_only = [{"pooled": f["pooled"]} for f in encoded_features()]
    for name in NAMES:
        if FUSIONS.get(name).level == "intermediate" and not FUSIONS.get(name).uses_tokens:
            run(FUSIONS.get(name)(**KWARGS[name]), pooled_only, mixed_presence())
    with pytest.raises(ValueError, match=r"lacks \['tokens', 'mask'\].*uses_tokens = True"):
        run(FUSIONS.get("cross_attention")(**KWARGS["cross_attention"]), pooled_only,
            mixed_presence())


def test_only_fusions_that_read_pooled_ask_for_it():
    assert [n for n in NAMES if not FUSIONS.get(n).uses_pooled] == ["cross_attention"]
    tokens_only = [{"tokens": f["tokens"], "mask": f["mask"]} for f in encoded_features()]
    outputs = []
    for features in (encoded_features(), tokens_only):  # pooled is never read
        keras.utils.set_random_seed(0)
        outputs.append(run(FUSIONS.get("cross_attention")(**KWARGS["cross_attention"]),
                           features, mixed_presence())["fused"])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    for name in NAMES:
        if FUSIONS.get(name).level != "early" and FUSIONS.get(name).uses_pooled:
            with pytest.raises(ValueError, match=r"lacks \['pooled'\].*uses_pooled = True"):
                run(FUSIONS.get(name)(**KWARGS[name]), tokens_only, mixed_presence())


@pytest.mark.parametrize("name", ["late_mean", "late_stacking"])
def test_a_frozen_late_head_does_not_train(name):
    layer = FUSIONS.get(name)(**KWARGS[name])
    features = encoded_features()
    run(layer, features, mixed_presence())
    layer.freeze_head(1)
    assert layer.heads[1].trainable_weights == [] and layer.heads[0].trainable_weights
    frozen = [np.array(w) for w in layer.heads[1].weights]
    inputs = [{k: keras.Input(v.shape[1:]) for k, v in f.items()} for f in features]
    presence = keras.Input((3,))
    model = keras.Model([inputs, presence], layer(inputs, presence)["fused"])
    model.compile(keras.optimizers.Adam(1e-1), "sparse_categorical_crossentropy")
    labels = np.arange(BATCH) % NUM_CLASSES
    model.fit([features, np.ones((BATCH, 3), "float32")], labels, epochs=2, verbose=0)
    for before, after in zip(frozen, layer.heads[1].weights, strict=True):
        np.testing.assert_array_equal(np.array(after), before)
    with pytest.raises(ValueError, match="has 3 heads"):
        layer.freeze_head(3)


@pytest.mark.parametrize("name", NAMES)
def test_test_kwargs_cover_every_constructor_argument(name):
    params = inspect.signature(FUSIONS.get(name).__init__).parameters
    arguments = {p for p, v in params.items() if p != "self" and v.kind != v.VAR_KEYWORD}
    assert arguments == set(KWARGS[name]), "KWARGS must name every constructor argument"


@pytest.mark.parametrize("name", NAMES)
def test_layer_harness(name):
    run_layer_test((FUSIONS.get(name), KWARGS[name]), [features_for(name), mixed_presence()],
                   expected_shapes=expected_shapes(name))


def assert_absent_changes_nothing(layer, features: list, presence: np.ndarray) -> None:
    """Large noise on modality j where it is absent (values, and the mask) changes no output."""
    reference = run(layer, features, presence)
    rng = np.random.default_rng(1)
    for j in range(len(features)):
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
            np.testing.assert_array_equal(out[key], reference[key],
                                          err_msg=f"{layer.name}: {key}, modality {j} absent")


@pytest.mark.parametrize("name", NAMES)
def test_absent_modality_changes_no_output(name):
    layer = FUSIONS.build({"name": name, **KWARGS[name]})
    assert_absent_changes_nothing(layer, features_for(name), mixed_presence())


class UnmaskedGatedFusion(GatedFusion):
    """Gated fusion done the naive way: absent modalities masked after the softmax."""

    def call(self, features, presence, training=None) -> dict:
        pooled = keras.ops.stack([f["pooled"] for f in features], axis=1)
        weights = keras.ops.softmax(self.gate(pooled)[..., 0], axis=-1) * presence
        return {"fused": keras.ops.sum(weights[..., None] * pooled, axis=1)}


def test_presence_check_catches_a_softmax_over_absent_modalities():
    with pytest.raises(AssertionError, match="modality 0 absent"):
        assert_absent_changes_nothing(UnmaskedGatedFusion(embed_dim=8), encoded_features(),
                                      mixed_presence())


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


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_attention_weights_are_the_scaled_dot_product_softmax_over_present():
    features, presence = encoded_features(), mixed_presence()
    layer = FUSIONS.build({"name": "attention", "embed_dim": 8})
    out = run(layer, features, presence)
    pooled = np.stack([f["pooled"] for f in features], axis=1)
    scores = pooled @ np.asarray(layer.key.kernel) @ np.asarray(layer.query) / np.sqrt(8)
    scores = np.where(presence > 0, scores, -np.inf)
    np.testing.assert_allclose(out["modality_weights"], softmax(scores), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["fused"], np.einsum("bm,bmd->bd", softmax(scores), pooled),
                               rtol=1e-5, atol=1e-6)


def test_tensor_fusion_is_a_dense_layer_on_the_outer_product():
    features, presence = encoded_features(), mixed_presence()
    layer = FUSIONS.build({"name": "tensor", "embed_dim": 8, "dim": 2})
    out = run(layer, features, presence)
    product = np.ones((BATCH, 1))
    for m, feature in enumerate(features):
        dense = layer.projections[m]
        h = feature["pooled"] @ np.asarray(dense.kernel) + np.asarray(dense.bias)
        extended = np.concatenate([np.ones((BATCH, 1)), h * presence[:, m:m + 1]], axis=1)
        product = np.einsum("bi,bj->bij", product, extended).reshape(BATCH, -1)
    assert product.shape == (BATCH, 27)
    expected = product @ np.asarray(layer.output_dense.kernel) + np.asarray(layer.output_dense.bias)
    np.testing.assert_allclose(out["fused"], expected, rtol=1e-4, atol=1e-5)


def test_low_rank_fusion_is_the_rank_sum_of_factor_products():
    features, presence = encoded_features(), mixed_presence()
    layer = FUSIONS.build({"name": "low_rank_tensor", "embed_dim": 8, "rank": 3})
    out = run(layer, features, presence)
    product = 1.0
    for m, feature in enumerate(features):
        extended = np.concatenate([np.ones((BATCH, 1)), feature["pooled"] * presence[:, m:m + 1]],
                                  axis=1)
        product = product * np.einsum("bi,rio->bro", extended, np.asarray(layer.factors[m]))
    expected = np.einsum("bro,r->bo", product, np.asarray(layer.rank_weights))
    np.testing.assert_allclose(out["fused"], expected + np.asarray(layer.bias), rtol=1e-4,
                               atol=1e-5)


def head_probabilities(layer, features) -> np.ndarray:
    """``[B, M, K]`` per-modality softmax of the late heads."""
    return np.stack([softmax(f["pooled"] @ np.asarray(h.kernel) + np.asarray(h.bias))
                     for h, f in zip(layer.heads, features, strict=True)], axis=1)


@pytest.mark.parametrize("name", ["late_mean", "late_product"])
def test_late_mean_and_product_combine_present_heads(name):
    features, presence = encoded_features(), mixed_presence()
    layer = FUSIONS.build({"name": name, "num_classes": NUM_CLASSES})
    fused = run(layer, features, presence)["fused"]
    p = head_probabilities(layer, features)
    if name == "late_mean":
        expected = np.einsum("bm,bmk->bk", presence, p) / presence.sum(axis=1, keepdims=True)
    else:
        expected = softmax(np.einsum("bm,bmk->bk", presence, np.log(p)))
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)


def test_cross_attention_without_other_modalities_is_the_own_pooled_path():
    features = encoded_features()
    presence = np.eye(3, dtype="float32")[np.arange(BATCH) % 3]
    layer = FUSIONS.build({"name": "cross_attention", "embed_dim": 8, "num_heads": 2})
    fused = run(layer, features, presence)["fused"]
    for b in range(BATCH):
        m = b % 3
        mask = features[m]["mask"][b]
        tokens = np.where(mask[:, None] > 0, features[m]["tokens"][b], 0.0)
        dense = layer.projections[m]
        projected = tokens @ np.asarray(dense.kernel) + np.asarray(dense.bias)
        own = (projected * mask[:, None]).sum(axis=0) / mask.sum()
        np.testing.assert_allclose(fused[b], own, rtol=1e-5, atol=1e-6)


def test_cross_attention_ignores_padded_tokens():
    features, presence = encoded_features(), mixed_presence()
    layer = FUSIONS.build({"name": "cross_attention", "embed_dim": 8, "num_heads": 2})
    reference = run(layer, features, presence)["fused"]
    padded = [dict(f) for f in features]
    padded[2]["tokens"] = np.where(features[2]["mask"][..., None] > 0, features[2]["tokens"], 1e6)
    np.testing.assert_array_equal(run(layer, padded, presence)["fused"], reference)


def test_early_fusion_with_an_image():
    rng = np.random.default_rng(0)
    features = [{"raw": rng.normal(size=(BATCH, 64, 3)).astype("float32")},
                {"raw": rng.normal(size=(BATCH, 7, 6, 1)).astype("float32")},
                {"raw": rng.normal(size=(BATCH, 5)).astype("float32")}]
    run_layer_test((FUSIONS.get("early"), KWARGS["early"]), [features, mixed_presence()],
                   expected_shapes={"fused": (None, 16)})
    layer = FUSIONS.build({"name": "early", "embed_dim": 8, "bands": 16})
    assert_absent_changes_nothing(layer, features, mixed_presence())
    # summaries: 3 * (2 + 16) for the series (64 >= 4 * 16), 4 * 3 pooled pixels, 5 values
    assert [int(w.shape[0]) for w in layer.missing] == [54, 12, 5]


def test_early_timeline_refuses_images_and_needs_a_series():
    presence = np.ones((2, 2), "float32")
    image = {"raw": np.zeros((2, 8, 8, 1), "float32")}
    series = {"raw": np.zeros((2, 16, 2), "float32")}
    with pytest.raises(ValueError, match=r"features\[1\] is an image .*'early' fusion"):
        FUSIONS.build("early_timeline")([series, image], presence)
    with pytest.raises(ValueError, match="no time series"):
        FUSIONS.build("early_timeline")([{"raw": np.zeros((2, 3), "float32")}] * 2, presence)


def test_early_timeline_default_steps_is_the_shortest_series_at_least_8():
    presence = np.ones((2, 3), "float32")
    for lengths, steps in (((64, 16), 16), ((64, 5), 8)):
        layer = FUSIONS.build("early_timeline")
        layer([{"raw": np.zeros((2, n, 1), "float32")} for n in lengths]
              + [{"raw": np.zeros((2, 3), "float32")}], presence)
        assert layer.timeline == steps


def test_early_timeline_stack_is_the_encoders_input_or_the_conv_stacks():
    """With ``encoder``, ``fused`` is that encoder's ``pooled`` of the stacked channels
    (resampled series, repeated vector, presence flags); without, the plain conv stack runs."""
    features, presence = raw_features(), mixed_presence()
    spec = {"name": "conv1d", "filters": [4, 8], "kernel_size": 3}
    layer = FUSIONS.build({"name": "early_timeline", "embed_dim": 8, "encoder": spec})
    fused = run(layer, features, presence)["fused"]
    from mmkeras.fusion.early_timeline import resample_matrix

    stacked = np.concatenate(
        [np.einsum("st,btc->bsc", resample_matrix(64, 16), features[0]["raw"]),
         np.einsum("st,btc->bsc", resample_matrix(16, 16), features[1]["raw"]),
         np.repeat(features[2]["raw"][:, None, :], 16, axis=1)], axis=-1)
    for m in range(3):  # an absent modality's channels are 0
        channels = [slice(0, 3), slice(3, 5), slice(5, 10)][m]
        stacked[presence[:, m] == 0, :, channels] = 0.0
    stacked = np.concatenate([stacked, np.repeat(presence[:, None, :], 16, axis=1)], axis=-1)
    expected = layer.stack_encoder(stacked.astype("float32"))["pooled"]
    np.testing.assert_allclose(fused, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-6)
    assert layer.convs == [] and len(layer.stack_encoder.convs) == 2
    assert_absent_changes_nothing(layer, features, presence)
    plain = {"embed_dim": 8, "steps": 12, "conv_layers": 2, "kernel_size": 5}
    run_layer_test((FUSIONS.get("early_timeline"), plain), [features, presence],
                   expected_shapes={"fused": (None, 8)})
    with pytest.raises(ValueError, match="encoder 'mlp' takes \\['vector'\\] inputs"):
        FUSIONS.build({"name": "early_timeline", "encoder": "mlp"})


def test_resample_matrix_pools_down_and_interpolates_up():
    from mmkeras.fusion.early_timeline import resample_matrix

    ramp = np.arange(12.0)
    np.testing.assert_allclose(resample_matrix(12, 4) @ ramp, [1.0, 4.0, 7.0, 10.0])
    # bins of 2.4 samples: the first is samples 0, 1 and 0.4 of sample 2: (0 + 1 + 0.8) / 2.4
    np.testing.assert_allclose(resample_matrix(12, 5) @ ramp,
                               [0.75, 37 / 12, 5.5, 95 / 12, 10.25], rtol=1e-6)
    up = resample_matrix(4, 8) @ np.arange(4.0)
    np.testing.assert_allclose(up, np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3))
    for length, steps in ((1000, 8), (16, 12), (5, 8), (7, 7)):
        np.testing.assert_allclose(resample_matrix(length, steps).sum(axis=1), 1.0, rtol=1e-6)


def test_input_errors_name_the_argument():
    features = encoded_features()
    with pytest.raises(ValueError, match=r"presence must be \[batch, 3\]"):
        FUSIONS.build("concat")(features, np.ones((BATCH, 2), "float32"))
    unequal = [dict(f) for f in features]
    unequal[1]["pooled"] = np.ones((BATCH, 4), "float32")
    with pytest.raises(ValueError, match=r"features\[i\]\['pooled'\] must all have the same size"):
        FUSIONS.build("sum")(unequal, mixed_presence())
    with pytest.raises(ValueError, match="use low_rank_tensor"):
        FUSIONS.build({"name": "tensor", "dim": 63})(features, mixed_presence())
    with pytest.raises(ValueError, match=r"features\[0\] lacks \['tokens'\]"):
        FUSIONS.build("cross_attention")([{"pooled": f["pooled"], "mask": f["mask"]}
                                          for f in features], mixed_presence())


def test_late_stacking_starts_as_the_product_of_experts():
    """Untrained, stacking on log-probabilities is ``late_product`` with the same heads, absent
    modalities included; a config saved before ``stack_on`` existed loads as probabilities."""
    features, presence = encoded_features(), mixed_presence()
    stacking = FUSIONS.get("late_stacking")(num_classes=NUM_CLASSES, embed_dim=8)
    product = FUSIONS.get("late_product")(num_classes=NUM_CLASSES, embed_dim=8)
    fused = run(stacking, features, presence)["fused"]
    run(product, features, presence)
    product.set_weights([np.array(w) for head in stacking.heads for w in head.weights])
    np.testing.assert_allclose(fused, run(product, features, presence)["fused"], atol=1e-6)
    config = stacking.get_config()
    assert config.pop("stack_on") == "log_probabilities"
    assert type(stacking).from_config(config).stack_on == "probabilities"
    with pytest.raises(ValueError, match="stack_on must be one of"):
        FUSIONS.get("late_stacking")(num_classes=NUM_CLASSES, stack_on="logits")
