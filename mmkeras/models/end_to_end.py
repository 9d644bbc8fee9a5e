"""The inference model: preprocessor and task in one graph, taking raw inputs.

This is what a run saves as ``model.keras`` and exports for TF Serving: ``{modality: raw
tensor}`` (waveforms, sensor windows, pixels, strings) in, the task's outputs out. Presence flags
``<modality>_present`` are optional inputs: leave them out (or pass ``None``) and the modality
counts as present. So are the step masks ``<modality>_step_mask`` (``[batch, T]``, 1 = observed)
of a model trained with them: left out, every step counts as observed.

Example:
    model = end_to_end(preprocessor, task)
    model.predict({"audio": waveforms, "image": pixels})["probabilities"]
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mmkeras.models.preprocessor import PRESENT_SUFFIX, STEP_MASK_SUFFIX, MultimodalPreprocessor


@keras.saving.register_keras_serializable(package="mmkeras")
class InferenceModel(keras.Model):
    """A functional model whose ``<modality>_present`` and ``_step_mask`` inputs may be omitted."""

    def optional_inputs(self) -> list[str]:
        """Names of the presence and step-mask inputs (filled with ``None`` when missing)."""
        return [t.name for t in self.inputs
                if t.name.endswith(PRESENT_SUFFIX) or t.name.endswith(STEP_MASK_SUFFIX)]

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, dict):
            # Keras refuses a mix of tensors and None: arrays (strings too) become tensors.
            inputs = {k: v if v is None or tf.is_tensor(v) or isinstance(v, keras.KerasTensor)
                      else tf.constant(v) for k, v in inputs.items()}
            inputs = {**dict.fromkeys(self.optional_inputs()), **inputs}
        return super().__call__(inputs, *args, **kwargs)


def end_to_end(preprocessor: MultimodalPreprocessor, task: keras.Model,
               name: str = "mmkeras_model") -> InferenceModel:
    """Compose ``preprocessor`` and ``task`` into one :class:`InferenceModel` on raw inputs."""
    inputs: dict[str, keras.KerasTensor] = {}
    for mod, spec in preprocessor.modalities.items():
        inputs[mod] = keras.Input(spec.shape, dtype=spec.dtype, name=mod)
    for mod in preprocessor.modalities:
        inputs[mod + PRESENT_SUFFIX] = keras.Input((1,), name=mod + PRESENT_SUFFIX,
                                                   optional=True)
    for mod in preprocessor.step_masks:
        steps = preprocessor.modalities[mod].shape[0]
        inputs[mod + STEP_MASK_SUFFIX] = keras.Input((steps,), name=mod + STEP_MASK_SUFFIX,
                                                     optional=True)
    return InferenceModel(inputs, task(preprocessor(inputs)), name=name)
