"""Modality dropout: drop whole modalities at random while training (ModDrop)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class ModalityDropout(keras.layers.Layer):
    """Zero each modality's vector independently with probability ``rate`` per example.

    Only while training, and never all modalities of one example at once (one of them is then
    kept at random). A fusion model trained this way cannot lean on one modality that happens to
    separate the training set, must use the evidence in every modality, and keeps working when
    a modality is missing at inference (Neverova et al., ModDrop, 2015). Identity at inference.

    Example:
        >>> drop = ModalityDropout(0.5, seed=0)
        >>> a, b = keras.ops.ones((4, 3)), keras.ops.ones((4, 2))
        >>> [t.shape for t in drop([a, b], training=True)]
        [(4, 3), (4, 2)]
    """

    def __init__(self, rate: float = 0.2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"ModalityDropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: list, training=None):
        inputs = list(inputs)
        if not training or self.rate == 0.0 or len(inputs) < 2:
            return inputs
        ops = keras.ops
        batch = ops.shape(inputs[0])[0]
        keep = keras.random.uniform((batch, len(inputs)), seed=self.seed_generator) >= self.rate
        rescue = ops.one_hot(
            keras.random.randint((batch,), 0, len(inputs), seed=self.seed_generator), len(inputs)
        )
        none_kept = ops.logical_not(ops.any(keep, axis=1, keepdims=True))
        keep = ops.cast(ops.logical_or(keep, ops.logical_and(none_kept, rescue > 0)), "float32")
        return [x * ops.cast(keep[:, i:i + 1], x.dtype) for i, x in enumerate(inputs)]

    def compute_output_shape(self, input_shapes: list) -> list:
        return [tuple(s) for s in input_shapes]

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
