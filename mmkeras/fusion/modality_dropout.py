"""Modality dropout: mark present modalities absent at random while training (ModDrop)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityDropout(keras.layers.Layer):
    """Clear presence bits ``[B, M]`` at random while training; identity at inference.

    Each present modality of each example is marked absent with probability ``rate``, but never
    all of an example's present modalities: when every one would go, one of them (chosen at
    random) is kept. A modality already absent stays absent. Since fusions exclude absent
    modalities exactly, the model learns to use the evidence in every modality and keeps
    working when one is missing at inference (Neverova et al., ModDrop, 2015).

    Example:
        >>> import numpy as np
        >>> presence = np.array([[1, 1, 1], [1, 0, 0]], "float32")
        >>> kept = keras.ops.convert_to_numpy(ModalityDropout(0.9, seed=0)(presence, training=True))
        >>> kept.sum(axis=1).tolist(), kept[1].tolist()
        ([1.0, 1.0], [1.0, 0.0, 0.0])
    """

    def __init__(self, rate: float = 0.2, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"ModalityDropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, presence, training=None):
        if not training or self.rate == 0.0:
            return presence
        ops = keras.ops
        present = ops.cast(presence, "float32") > 0
        shape = ops.shape(presence)
        keep = keras.random.uniform(shape, seed=self.seed_generator) >= self.rate
        kept = ops.logical_and(present, keep)
        # An example that would lose every present modality keeps a random one of them.
        scores = ops.where(present, keras.random.uniform(shape, seed=self.seed_generator), -1.0)
        rescue = ops.one_hot(ops.argmax(scores, axis=1), presence.shape[-1]) > 0
        lost_all = ops.logical_and(ops.any(present, axis=1, keepdims=True),
                                   ops.logical_not(ops.any(kept, axis=1, keepdims=True)))
        kept = ops.logical_or(kept, ops.logical_and(lost_all, rescue))
        return ops.cast(kept, presence.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
