"""Early fusion: combine every modality's input features before one shared network."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class EarlyFusion(keras.layers.Layer):
    """Concatenate per-modality feature vectors and batch-normalise each feature.

    The features are fixed summaries of the (standardised) inputs, see
    :class:`mmkeras.encoders.SummaryFeatures`; normalisation puts band energies, means and
    embeddings on one scale for the shared network that follows.

    Example:
        >>> fused = EarlyFusion()([keras.ops.ones((2, 4)), keras.ops.ones((2, 6))])
        >>> fused.shape
        (2, 10)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization()

    def build(self, input_shapes: list) -> None:
        self.norm.build((input_shapes[0][0], sum(s[-1] for s in input_shapes)))

    def call(self, features: list, training=None):
        return self.norm(keras.ops.concatenate(list(features), axis=-1), training=training)

    def compute_output_shape(self, input_shapes: list) -> tuple:
        return (input_shapes[0][0], sum(s[-1] for s in input_shapes))
