"""Every fusion variant builds, trains a step and survives a .keras round trip."""

import keras
import numpy as np
import pytest

from mmkeras.data.dataset import to_tf_dataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.encoders import SpectrogramEncoder, SummaryFeatures, TextEncoder, TimeSeriesEncoder
from mmkeras.fusion import (
    EarlyFusion,
    IntermediateFusion,
    LateFusion,
    ModalityDropout,
    build_fusion_model,
)


@pytest.fixture(scope="module")
def state(tiny_machine):
    return fit_preprocessing(tiny_machine)


@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_fusion_variant_trains_and_round_trips(fusion, tiny_machine, state, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_fusion_model(tiny_machine.modalities, 4, fusion, state, embed_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    batch = next(iter(to_tf_dataset(tiny_machine, "train", 32, shuffle=True)))
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(*batch)
    assert np.isfinite(loss)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert sum(changed) >= len(changed) // 2, "one training step left most weights untouched"

    inputs = batch[0]
    expected = model.predict(inputs, verbose=0)
    assert expected.shape == (32, 4)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    path = tmp_path / f"{fusion}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.predict(inputs, verbose=0), expected)


@pytest.mark.parametrize(
    "layer",
    [
        TimeSeriesEncoder(embed_dim=8, filters=(4, 8)),
        SpectrogramEncoder(embed_dim=8, filters=(4,), kernel_size=3),
        TextEncoder(vocab_size=10, embed_dim=8),
        SummaryFeatures(bands=4),
        EarlyFusion(),
        IntermediateFusion("gated"),
        LateFusion(),
        ModalityDropout(0.3, seed=2),
    ],
)
def test_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_intermediate_modes():
    a, b = keras.ops.ones((2, 4)), keras.ops.zeros((2, 4))
    assert IntermediateFusion("concat")([a, b]).shape == (2, 8)
    np.testing.assert_allclose(IntermediateFusion("sum")([a, b]), np.ones((2, 4)))
    gated = keras.ops.convert_to_numpy(IntermediateFusion("gated")([a, b]))
    assert gated.shape == (2, 4) and np.all((gated >= 0) & (gated <= 1))
    with pytest.raises(ValueError, match="equal embedding sizes"):
        IntermediateFusion("sum")([a, keras.ops.ones((2, 3))])


def test_late_fusion_starts_as_plain_average():
    p1 = keras.ops.convert_to_tensor([[1.0, 0.0]])
    p2 = keras.ops.convert_to_tensor([[0.0, 1.0]])
    np.testing.assert_allclose(LateFusion()([p1, p2]), [[0.5, 0.5]])


def test_modality_dropout_training_only_and_never_all():
    drop = ModalityDropout(0.6, seed=1)
    a, b, c = (keras.ops.ones((500, 4)) for _ in range(3))
    same = drop([a, b, c], training=False)
    assert all(np.array_equal(keras.ops.convert_to_numpy(t), np.ones((500, 4))) for t in same)
    kept = np.stack([keras.ops.convert_to_numpy(t)[:, 0] for t in drop([a, b, c], training=True)])
    assert set(np.unique(kept)) == {0.0, 1.0}
    assert kept.sum(axis=0).min() >= 1, "an example lost every modality"
    assert 0.3 < 1 - kept.mean() < 0.6  # ~rate, less the rescued examples
