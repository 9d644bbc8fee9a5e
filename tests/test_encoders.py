"""Every registered encoder honours the encoder contract (mmkeras.encoders.base).

Parametrised over ``ENCODERS.names()``: a newly registered encoder is tested automatically (with
``embed_dim=8``, plus ``vocab_size`` for token inputs, on the first of its input kinds) until it
gets an entry in ``SETTINGS``.

The layer checks are those of ``tests/layer_harness.run_layer_test`` (build, shapes, one
training step moving every weight, config, ``model.keras`` round trip, ``mixed_float16``), plus
the encoder contract's mask rules.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

import mmkeras.encoders
from mmkeras.encoders.keras_application import KerasApplicationEncoder
from mmkeras.encoders.transformer_block import TransformerBlock
from mmkeras.registry import ENCODERS
from tests.layer_harness import run_layer_test
from tests.test_hub_encoder import write_savedmodel

VOCAB = 30
HUB_DIR = Path(tempfile.mkdtemp(prefix="mmkeras-hub-"))
write_savedmodel(HUB_DIR / "vector", input_shape=(None, 10), features=5)

# name: (every constructor argument, values unlike the defaults; input; number of tokens)
SETTINGS = {
    "conv1d": ({"embed_dim": 8, "filters": (4, 8), "kernel_size": 5, "min_stride_length": 16},
               "sequence", 16),
    "gru": ({"embed_dim": 8, "units": 4, "bidirectional": True, "conv_filters": 4,
             "kernel_size": 3, "max_steps": 32}, "sequence", 32),
    "transformer": ({"embed_dim": 8, "num_layers": 1, "num_heads": 2, "mlp_dim": 16,
                     "dropout": 0.0, "patch_size": None, "max_tokens": 16}, "sequence", 16),
    "spectrogram_cnn": ({"embed_dim": 8, "filters": (4, 8), "kernel_size": 3}, "spectrogram", 8),
    "image_cnn": ({"embed_dim": 8, "filters": (4,), "grid": 3}, "image", 9),
    "keras_application": ({"embed_dim": 8, "architecture": "MobileNetV3Small", "weights": None,
                           "input_size": 64, "backbone_kwargs": {"minimalistic": True}},
                          "image", 4),
    "text_bag": ({"vocab_size": VOCAB, "embed_dim": 8, "token_dim": 6}, "tokens", 12),
    "text_transformer": ({"vocab_size": VOCAB, "embed_dim": 8, "num_layers": 1, "num_heads": 2,
                          "mlp_dim": 16, "dropout": 0.0, "max_length": 16}, "tokens", 12),
    "text_cnn": ({"vocab_size": VOCAB, "embed_dim": 8, "token_dim": 6, "filters": 4,
                  "kernel_sizes": (3,)}, "tokens", 12),
    "mlp": ({"embed_dim": 8, "hidden_units": (16, 8), "dropout": 0.1}, "vector", 10),
    "hub": ({"handle": str(HUB_DIR / "vector"), "embed_dim": 8, "fine_tune": True,
             "signature": None, "output_key": None}, "vector", 1),
}
# Encoders that take step_mask (the others reject it).
STEP_MASKED = ("conv1d", "gru", "transformer", "spectrogram_cnn", "mlp")
assert set(STEP_MASKED) == {n for n in ENCODERS.names() if ENCODERS.get(n).takes_step_mask}


def example(kind: str, seed: int = 0) -> np.ndarray:
    """A small batch of each input kind (spectrogram: a sequence of 16 mel bands)."""
    rng = np.random.default_rng(seed)
    if kind == "tokens":
        ids = rng.integers(1, VOCAB, size=(2, 12))
        ids[0, 8:] = 0
        ids[1, 5:] = 0
        return ids.astype("int64")
    shape = {"sequence": (2, 64, 3), "spectrogram": (2, 32, 16), "image": (2, 28, 28, 1),
             "vector": (2, 10)}[kind]
    return rng.normal(size=shape).astype("float32")


def settings(name: str) -> tuple[type, dict, np.ndarray, int | None]:
    cls = ENCODERS.get(name)
    if name in SETTINGS:
        kwargs, kind, tokens = SETTINGS[name]
    else:
        kind, tokens = cls.input_kinds[0], None
        kwargs = {"embed_dim": 8, **({"vocab_size": VOCAB} if kind == "tokens" else {})}
    return cls, kwargs, example(kind), tokens


def functional(layer, x, **kwargs):
    inputs = keras.Input(x.shape[1:], dtype=str(x.dtype))
    outputs = layer(inputs, **kwargs)
    return keras.Model(inputs, outputs), outputs


def predict(model, x) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model.predict(x, batch_size=len(x), verbose=0).items()}


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_layer_contract(name):
    cls, kwargs, x, n = settings(name)
    kind = SETTINGS.get(name, (None, cls.input_kinds[0]))[1]
    assert issubclass(cls, mmkeras.encoders.base.Encoder)
    # 8 examples: with 2, a small relu Dense can go dead in the one training step
    batch = np.concatenate([x] + [example(kind, seed) for seed in (1, 2, 3)])
    run_layer_test((cls, kwargs), [batch],
                   expected_shapes={"tokens": (None, n, 8), "mask": (None, n), "pooled": (None, 8)})

    # encoder-specific: a 0/1 float32 mask, also under mixed precision
    out = predict(functional(cls(**kwargs), x)[0], x)
    assert out["mask"].dtype == np.float32 and set(np.unique(out["mask"])) <= {0.0, 1.0}
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = predict(functional(cls(**kwargs), x)[0], x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed["mask"].dtype == np.float32 and mixed["pooled"].dtype == np.float16


# Weights that serve the tokens alone (not built with return_tokens=False), at SETTINGS sizes.
TOKEN_ONLY_PARAMS = {"conv1d": 8 * 8 + 8, "spectrogram_cnn": 8 * 8 + 8,
                     "image_cnn": 4 * 8 + 8 + 9 * 8, "mlp": 2 * 10 * 8, "text_cnn": 4 * 8 + 8}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_pooled_only_encoder_builds_no_token_weights(name):
    cls, kwargs, x, _ = settings(name)
    kind = SETTINGS.get(name, (None, cls.input_kinds[0]))[1]
    batch = np.concatenate([x] + [example(kind, seed) for seed in (1, 2, 3)])
    # every weight moves in one step: none is left without a gradient
    run_layer_test((cls, {**kwargs, "return_tokens": False}), [batch],
                   expected_shapes={"pooled": (None, 8)})
    with_tokens, pooled_only = cls(**kwargs), cls(**kwargs, return_tokens=False)
    with_tokens(x)
    assert sorted(pooled_only(x)) == ["pooled"]
    assert (with_tokens.count_params() - pooled_only.count_params()
            == TOKEN_ONLY_PARAMS.get(name, 0))


# Weights that serve pooled alone (not built with return_pooled=False), at SETTINGS sizes: the
# relu projection, and mlp's whole Dense stack (10 -> 16 -> 8 -> 8).
POOLED_ONLY_PARAMS = {"conv1d": 2 * 8 * 8 + 8, "spectrogram_cnn": 2 * 8 * 8 + 8,
                      "image_cnn": 9 * 4 * 8 + 8, "text_cnn": 4 * 8 + 8,
                      "mlp": 10 * 16 + 16 + 16 * 8 + 8 + 8 * 8 + 8}


@pytest.mark.parametrize("name", ENCODERS.names())
def test_token_only_encoder_builds_no_pooled_weights(name):
    cls, kwargs, x, n = settings(name)
    kind = SETTINGS.get(name, (None, cls.input_kinds[0]))[1]
    batch = np.concatenate([x] + [example(kind, seed) for seed in (1, 2, 3)])
    # every weight moves in one step; config and .keras round trips
    run_layer_test((cls, {**kwargs, "return_pooled": False}), [batch],
                   expected_shapes={"tokens": (None, n, 8), "mask": (None, n)})
    with_pooled, token_only = cls(**kwargs), cls(**kwargs, return_pooled=False)
    both = with_pooled(x)
    tokens_and_mask = token_only(x)
    assert sorted(tokens_and_mask) == ["mask", "tokens"]
    assert tokens_and_mask["tokens"].shape == both["tokens"].shape
    assert (with_pooled.count_params() - token_only.count_params()
            == POOLED_ONLY_PARAMS.get(name, 0))
    rebuilt = cls.from_config(token_only.get_config())
    assert (rebuilt.return_tokens, rebuilt.return_pooled) == (True, False)


def test_spectral_peaks_and_band_statistics_serve_pooled_alone():
    cls = ENCODERS.get("spectrogram_cnn")
    kwargs = {"embed_dim": 8, "filters": (), "kernel_size": 3, "utterance_norm": "mean",
              "input_stats": True, "spectral_peaks": 3, "channels": 2}
    x = example("spectrogram")  # 16 features: 2 spectra of 8 bins
    batch = np.concatenate([x] + [example("spectrogram", seed) for seed in (1, 2, 3)])
    run_layer_test((cls, {**kwargs, "return_pooled": False}), [batch],
                   expected_shapes={"tokens": (None, 32, 8), "mask": (None, 32)})
    with_pooled, token_only = cls(**kwargs), cls(**kwargs, return_pooled=False)
    with_pooled(x)
    assert sorted(token_only(x)) == ["mask", "tokens"]
    assert token_only.peaks == [] and token_only.project is None
    # peak convolutions (5 x 2 -> 3, 5 x 3 -> 3) and the projection of frames' mean and max,
    # band means and stds and peaks (4 * 16 + 3 -> 8)
    peaks = 5 * 2 * 3 + 3 + 5 * 3 * 3 + 3
    assert with_pooled.count_params() - token_only.count_params() == peaks + 67 * 8 + 8
    with pytest.raises(ValueError, match="do not split into channels=3"):
        cls(**{**kwargs, "channels": 3}, return_pooled=False)(x)


def test_an_encoder_returns_tokens_or_pooled():
    with pytest.raises(ValueError, match="return_tokens and return_pooled are both False"):
        ENCODERS.get("conv1d")(embed_dim=8, return_tokens=False, return_pooled=False)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_mismatched_input_kind_is_a_clear_error(name):
    cls, kwargs, _, _ = settings(name)
    if name == "hub":  # takes every kind: the check is against the wrapped function's input
        wrong = example("image")
        match = r"takes \(None, 10\) float32; got input of shape \(2, 28, 28, 1\)"
    else:
        kind = next(k for k in ("image", "sequence", "vector", "tokens")
                    if k not in cls.input_kinds)
        wrong = example(kind)
        match = rf"\(encoder '{name}', input kinds .*\) takes .*; got input of shape"
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)(wrong)


@pytest.mark.parametrize("name", STEP_MASKED)
def test_masked_steps_never_reach_the_outputs(name):
    cls, kwargs, x, n = settings(name)
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    steps = x.shape[1]
    step_mask = np.ones((2, steps), "float32")
    step_mask[0, steps // 2:] = 0  # a masked tail
    step_mask[1, 1:3] = 0  # a gap
    out = layer(x, step_mask=step_mask)
    changed = x.copy()
    changed[step_mask == 0] = 1e3
    again = layer(changed, step_mask=step_mask)
    for key in ("tokens", "mask", "pooled"):
        np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(out[key]), err_msg=key)
    token_mask = np.asarray(out["mask"])
    stride = steps // n
    np.testing.assert_array_equal(token_mask[0], np.arange(n) * stride < steps // 2)
    expected = np.ones(n, "float32")
    if stride == 1:  # one token per step: the gap shows; longer tokens keep a valid step
        expected[1:3] = 0
    np.testing.assert_array_equal(token_mask[1], expected)
    unmasked = np.asarray(layer(changed)["pooled"])
    assert not np.allclose(unmasked, np.asarray(out["pooled"]))


def test_gru_with_a_masked_tail_equals_the_shorter_series():
    cls, kwargs, x, _ = settings("gru")
    layer = cls(**{**kwargs, "max_steps": 64})
    step_mask = np.ones((1, 64), "float32")
    step_mask[:, 40:] = 0
    masked = np.asarray(layer(x[:1], step_mask=step_mask)["pooled"])
    np.testing.assert_allclose(np.asarray(layer(x[:1, :40])["pooled"]), masked, atol=1e-6)


@pytest.mark.parametrize("name", ["text_bag", "text_cnn", "text_transformer"])
def test_text_padding_is_masked_and_length_independent(name):
    cls, kwargs, ids, _ = settings(name)
    layer = cls(**kwargs)
    out = layer(ids)
    np.testing.assert_array_equal(np.asarray(out["mask"]), (ids != 0).astype("float32"))
    longer = layer(np.pad(ids, [[0, 0], [0, 4]]))
    np.testing.assert_allclose(np.asarray(longer["pooled"]), np.asarray(out["pooled"]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="pass step_mask=None"):
        layer(ids, step_mask=np.ones(ids.shape, "float32"))


def test_transformer_block_ignores_masked_tokens_exactly():
    block = TransformerBlock(num_heads=2, mlp_dim=16, dropout=0.0)
    tokens = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], "float32")
    changed = tokens.copy()
    changed[mask == 0] = 50.0
    a, b = np.asarray(block(tokens, mask)), np.asarray(block(changed, mask))
    np.testing.assert_array_equal(a[mask == 1], b[mask == 1])
    assert not np.allclose(np.asarray(block(tokens, np.ones_like(mask)))[0, :3], a[0, :3])


def test_keras_application_weights_file_and_no_download(tmp_path):
    _, kwargs, x, _ = settings("keras_application")
    first = KerasApplicationEncoder(**kwargs)
    want = first(x)
    path = tmp_path / "backbone.weights.h5"
    first.backbone.save_weights(path)
    second = KerasApplicationEncoder(**{**kwargs, "weights": str(path)})
    second(x)
    second.tokenize.set_weights(first.tokenize.get_weights())
    got = second(x)
    for key in ("tokens", "pooled"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    fresh = KerasApplicationEncoder(**kwargs)
    assert not np.array_equal(np.asarray(fresh.backbone.weights[0]),
                              np.asarray(first.backbone.weights[0]))
    assert second.get_config()["weights"] == str(path)
    with pytest.raises(ValueError, match="weights='imagenet' would download"):
        KerasApplicationEncoder(weights="imagenet")
    with pytest.raises(ValueError, match=r"'MobileNetV9' is not in keras\.applications"):
        KerasApplicationEncoder(architecture="MobileNetV9")


def test_step_mask_as_a_model_input_survives_the_keras_round_trip(tmp_path):
    cls, kwargs, x, n = settings("gru")
    series, presence = keras.Input(x.shape[1:]), keras.Input(x.shape[1:2])
    out = cls(**kwargs)(series, step_mask=presence)
    model = keras.Model([series, presence], out)
    step_mask = np.ones(x.shape[:2], "float32")
    step_mask[0, 20:] = 0
    expected = model.predict([x, step_mask], verbose=0)
    assert expected["mask"][0].sum() == 10 and expected["mask"][1].sum() == n
    model.save(tmp_path / "masked.keras")
    restored = keras.saving.load_model(tmp_path / "masked.keras")
    for key, value in restored.predict([x, step_mask], verbose=0).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
