"""Late fusion: one predictor per modality, decisions combined."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mmkeras")
class LateFusion(keras.layers.Layer):
    """Weighted average of per-modality class probabilities with learned modality weights.

    Input: a list of ``[batch, classes]`` probability tensors, one per modality. The weights are
    a softmax over one trainable logit per modality (initially equal), so the output is again a
    probability distribution.

    Example:
        >>> p = keras.ops.convert_to_tensor([[0.2, 0.8]])
        >>> LateFusion()([p, p]).shape
        (1, 2)
    """

    def build(self, input_shapes: list) -> None:
        self.modality_logits = self.add_weight(
            shape=(len(input_shapes),), initializer="zeros", name="modality_logits"
        )

    def call(self, probabilities: list):
        stacked = keras.ops.stack(list(probabilities), axis=1)  # [B, M, K]
        weights = keras.ops.softmax(self.modality_logits)[None, :, None]
        return keras.ops.sum(weights * stacked, axis=1)

    def compute_output_shape(self, input_shapes: list) -> tuple:
        return tuple(input_shapes[0])
