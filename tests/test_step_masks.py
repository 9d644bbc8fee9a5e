"""Step masks from imputation reach the encoders: backbone input, preprocessor default, training.

Contract (mmkeras.encoders.base): for an encoder with ``takes_step_mask``, the values at masked
steps reach no output. Through the backbone the same holds for ``fused``: changing every
masked step (to anything finite) changes nothing, exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from data_pipelines.mobifall import load as load_mobifall
from mmkeras.config import resolve_config
from mmkeras.data.dataset import ModalitySpec
from mmkeras.layers import load_model
from mmkeras.models import (
    FusionBackbone,
    FusionClassifier,
    MultimodalPreprocessor,
    backbone_modalities,
    end_to_end,
)
from mmkeras.models.preprocessor import add_step_masks, dataset_step_masks, spec_to_dict
from mmkeras.registry import ENCODERS
from mmkeras.training.trainer import feature_dataset, train
from tests.test_mobifall import SMALL, _copy_trial

STEPS = 64
SMALL_ENCODERS = {
    "conv1d": {"name": "conv1d", "filters": [4, 8]},
    "gru": {"name": "gru", "units": 4, "conv_filters": 4, "max_steps": 32},
    "transformer": {"name": "transformer", "num_layers": 1, "num_heads": 2, "max_tokens": 16,
                    "dropout": 0.0},
}


def masked_example(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, STEPS, 3)).astype("float32")
    mask = np.ones((4, STEPS), "float32")
    mask[0, 40:] = 0  # a masked tail
    mask[1, 5:9] = 0  # a gap
    mask[2, :3] = 0  # a masked head
    return x, mask


def test_step_masked_encoders_are_the_ones_that_take_a_mask():
    taking = sorted(n for n in ENCODERS.names() if ENCODERS.get(n).takes_step_mask)
    assert taking == ["conv1d", "gru", "mlp", "spectrogram_cnn", "transformer"]


@pytest.mark.parametrize("fusion", ["sum", "cross_attention"])
@pytest.mark.parametrize("encoder", sorted(SMALL_ENCODERS))
def test_masked_steps_change_no_backbone_output(encoder, fusion):
    keras.utils.set_random_seed(0)
    modalities = {"acc": {"input_kind": "sequence", "shape": [STEPS, 3], "step_mask": True},
                  "temp": {"input_kind": "sequence", "shape": [8, 1]}}
    backbone = FusionBackbone(modalities, encoders={"acc": SMALL_ENCODERS[encoder]},
                              fusion=fusion, embed_dim=8)
    assert "acc_step_mask" in backbone.input and "temp_step_mask" not in backbone.input
    x, mask = masked_example()
    temp = np.random.default_rng(1).normal(size=(4, 8, 1)).astype("float32")
    feed = {"acc": x, "temp": temp, "acc_step_mask": mask,
            "acc_present": np.ones((4, 1), "float32"), "temp_present": np.ones((4, 1), "float32")}
    out = keras.ops.convert_to_numpy(backbone(feed)["fused"])
    changed = x.copy()
    changed[mask == 0] = 1e3
    again = keras.ops.convert_to_numpy(backbone({**feed, "acc": changed})["fused"])
    np.testing.assert_array_equal(again, out)
    # the mask matters: with every step observed, the same change reaches the output
    observed = {**feed, "acc_step_mask": np.ones_like(mask)}
    before = keras.ops.convert_to_numpy(backbone(observed)["fused"])
    after = keras.ops.convert_to_numpy(backbone({**observed, "acc": changed})["fused"])
    assert not np.allclose(before[:3], after[:3])
    np.testing.assert_array_equal(before[3], after[3])  # example 3 has no masked step


def test_step_mask_only_for_sequences():
    with pytest.raises(ValueError, match="step_mask applies to sequences"):
        FusionBackbone({"v": {"input_kind": "vector", "shape": [5], "step_mask": True}})
    spectral = ModalitySpec("acc", "timeseries", (64, 3),
                            options={"spectrogram": {"n_fft": 16, "hop_length": 8}})
    state = {"acc": {"standardizer": {"method": "zscore", "center": [0.0], "scale": [1.0]}}}
    with pytest.raises(ValueError, match=r"step_masks names 'acc'.*no spectrogram"):
        MultimodalPreprocessor({"acc": spec_to_dict(spectral)}, state, step_masks=["acc"])


def test_an_omitted_step_mask_means_every_step_observed(tmp_path):
    keras.utils.set_random_seed(0)
    spec = ModalitySpec("acc", "timeseries", (STEPS, 3))
    state = {"acc": {"standardizer": {"method": "zscore", "center": [0.0] * 3,
                                      "scale": [1.0] * 3}}}
    pre = MultimodalPreprocessor({"acc": spec_to_dict(spec)}, state, step_masks=["acc"])
    backbone = FusionBackbone(backbone_modalities(pre), fusion="sum", embed_dim=8)
    model = end_to_end(pre, FusionClassifier(backbone, 3))
    assert model.optional_inputs() == ["acc_present", "acc_step_mask"]
    x, mask = masked_example()
    plain = keras.ops.convert_to_numpy(model({"acc": x})["probabilities"])
    ones = model({"acc": x, "acc_step_mask": np.ones_like(mask)})["probabilities"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ones), plain)
    masked = keras.ops.convert_to_numpy(model({"acc": x, "acc_step_mask": mask})["probabilities"])
    assert not np.allclose(masked[:3], plain[:3])
    model.save(tmp_path / "model.keras")
    restored = load_model(tmp_path / "model.keras")
    again = restored({"acc": x, "acc_step_mask": mask})["probabilities"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again), masked)


@pytest.fixture(scope="module")
def small_mobifall(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mobifall-masks")
    for code, subject, trial in SMALL:
        _copy_trial(data_dir / "sensors" / "mobifall_v2", root, code, subject, trial)
    return load_mobifall(root=root, verbose=False)


def test_mobifall_trains_with_its_step_masks(small_mobifall, tmp_path):
    dataset = small_mobifall
    assert dataset_step_masks(dataset) == ["acc", "gyro", "ori"]
    train_mask = dataset.splits["train"]["acc_mask"]
    assert (train_mask == 0).sum() > 0  # the copied trials do have imputed acc steps
    cfg = resolve_config(None, ["dataset=mobifall", "epochs=1", "embed_dim=8", "batch_size=16",
                                "fusion=sum", "verbose=0", "early_stopping=0",
                                f"output={tmp_path / 'run'}"])
    result = train(cfg, dataset=dataset)
    model = result.model
    assert {"acc_step_mask", "gyro_step_mask", "ori_step_mask"} <= set(model.optional_inputs())
    # what the trainer fed: the split's masks, batch by batch
    pre = next(layer for layer in model.layers if isinstance(layer, MultimodalPreprocessor))
    features, _ = next(iter(feature_dataset(pre, dataset, "train", 1000, None)))
    np.testing.assert_array_equal(features["acc_step_mask"].numpy(),
                                  train_mask.astype("float32"))
    # the exported SavedModel (no step-mask inputs: served windows count as observed) validated
    assert result.export_dir is not None and (result.export_dir / "saved_model.pb").is_file()
    assert result.metrics["accuracy"] >= 0.0
    # masks change predictions of the trained model where steps were imputed
    test = dataset.splits["test"]
    rows = np.flatnonzero((test["acc_mask"] == 0).any(axis=1))[:8]
    assert len(rows)
    raw = {s: test[s][rows] for s in ("acc", "gyro", "ori")}
    with_masks = {**raw, **{f"{s}_step_mask": test[f"{s}_mask"][rows].astype("float32")
                            for s in ("acc", "gyro", "ori")}}
    a = keras.ops.convert_to_numpy(model(with_masks)["probabilities"])
    b = keras.ops.convert_to_numpy(model(raw)["probabilities"])
    assert not np.allclose(a, b)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_add_step_masks_keeps_batches_aligned(small_mobifall):
    from mmkeras.data.dataset import to_tf_dataset

    ds = add_step_masks(to_tf_dataset(small_mobifall, "val", 7), small_mobifall, "val",
                        ["gyro"], 7)
    got = np.concatenate([x["gyro_step_mask"].numpy() for x, _ in ds])
    np.testing.assert_array_equal(got, small_mobifall.splits["val"]["gyro_mask"])
