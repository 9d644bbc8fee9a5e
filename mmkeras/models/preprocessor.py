"""The multimodal preprocessor: raw inputs to model features, with state fitted on train only.

Like KerasHub's ``Preprocessor``, it is a layer that runs in the ``tf.data`` pipeline while
training (``dataset.map(preprocessor)``) and is composed in front of the model for inference and
export (:func:`mmkeras.models.end_to_end`), so a served model still takes raw inputs. Per modality
it holds the fixed transform and the fitted state (log-mel + standardisation for audio, log
power spectrogram or differences + standardisation for sensor series, per-channel
standardisation for images, the vocabulary for text); see :mod:`mmkeras.data.preprocessing`.

It also emits one presence flag per modality, ``<modality>_present`` (``[batch, 1]`` float32):
the value given in the inputs, or 1 (present) when the input has none. For the time-series
modalities named in ``step_masks`` it emits ``<modality>_step_mask`` (``[batch, T]`` float32,
1 = observed step, 0 = imputed): the given mask, or all ones when the input has none. Only series
whose preprocessing keeps the time axis (no spectrogram) can take one.

Example:
    >>> from mmkeras.data.dataset import ModalitySpec
    >>> spec = ModalitySpec("temp", "timeseries", (8, 1))
    >>> state = {"temp": {"standardizer": {"method": "zscore", "center": [20.0], "scale": [3.0]}}}
    >>> pre = MultimodalPreprocessor({"temp": spec_to_dict(spec)}, state)
    >>> out = pre({"temp": keras.ops.full((2, 8, 1), 23.0)})
    >>> sorted(out), keras.ops.convert_to_numpy(out["temp"])[0, 0].round(2).tolist()
    (['temp', 'temp_present'], [1.0])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.preprocessing import is_spectral, preprocessing_layers

PRESENT_SUFFIX = "_present"
STEP_MASK_SUFFIX = "_step_mask"
DATASET_MASK_SUFFIX = "_mask"  # a dataset split's step-mask array, see dataset_step_masks


def spec_to_dict(spec: ModalitySpec) -> dict[str, Any]:
    """JSON form of a :class:`ModalitySpec` (as kept in configs and ``dataset.json``)."""
    return {"name": spec.name, "kind": spec.kind, "shape": list(spec.shape),
            "dtype": spec.dtype, "options": dict(spec.options)}


def spec_from_dict(data: dict[str, Any], name: str | None = None) -> ModalitySpec:
    """Inverse of :func:`spec_to_dict`."""
    return ModalitySpec(data.get("name", name), data["kind"], tuple(data["shape"]),
                        data.get("dtype", "float32"), dict(data.get("options") or {}))


@keras.saving.register_keras_serializable(package="mmkeras")
class MultimodalPreprocessor(keras.layers.Layer):
    """Map ``{modality: raw tensor}`` to ``{modality: features, <modality>_present: flag}``.

    Args:
        modalities: ``{name: spec dict}`` (see :func:`spec_to_dict`), in model order.
        state: the fitted state of :func:`mmkeras.data.preprocessing.fit_preprocessing`.
        step_masks: time-series modalities that take an optional ``<modality>_step_mask``.
    """

    def __init__(self, modalities: dict[str, dict], state: dict[str, dict],
                 step_masks: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        missing = [n for n in modalities if n not in state]
        if missing:
            raise ValueError(f"MultimodalPreprocessor: no fitted state for modalities {missing}")
        self.modalities = {n: spec_from_dict(s, n) for n, s in modalities.items()}
        self.step_masks = [n for n in self.modalities if n in set(step_masks or ())]
        for name in step_masks or ():
            if not takes_step_mask(self.modalities.get(name)):
                raise ValueError(
                    f"MultimodalPreprocessor: step_masks names {name!r}, which is not a "
                    f"time-series modality whose preprocessing keeps its steps (no spectrogram); "
                    f"modalities: {list(self.modalities)}")
        self.state = {n: state[n] for n in modalities}
        self.converters = {n: preprocessing_layers(spec, self.state[n])
                           for n, spec in self.modalities.items()}
        # A flat list, so Keras tracks every converter (and its lookup tables) for export.
        self.converter_layers = [layer for group in self.converters.values() for layer in group]

    def build(self, input_shape: Any = None) -> None:
        # Eagerly, even when first called while tracing (e.g. in tf.data or compute_output_spec):
        # the converters' constants must not belong to a temporary graph.
        with tf.init_scope():
            for name, spec in self.modalities.items():
                shape: tuple = (None, *spec.shape)
                for layer in self.converters[name]:
                    if not layer.built:
                        layer.build(shape)
                    shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(inputs) - set(self.input_names()))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}; expected {self.input_names()}")
        outputs: dict[str, Any] = {}
        batch = None
        for name, spec in self.modalities.items():
            if inputs.get(name) is None:
                raise ValueError(f"input {name!r} is missing; send zeros and "
                                 f"{name}{PRESENT_SUFFIX}=0 for an absent modality")
            x = inputs[name]
            if spec.dtype != "string":
                x = tf.cast(x, "float32") if spec.kind != "image" else x
            for layer in self.converters[name]:
                x = layer(x)
            outputs[name] = x
            batch = tf.shape(inputs[name])[0]
        for name in self.modalities:
            flag = inputs.get(name + PRESENT_SUFFIX)
            if flag is None:
                outputs[name + PRESENT_SUFFIX] = tf.ones((batch, 1), "float32")
            else:
                outputs[name + PRESENT_SUFFIX] = tf.reshape(tf.cast(flag, "float32"), (-1, 1))
        for name in self.step_masks:
            mask = inputs.get(name + STEP_MASK_SUFFIX)
            steps = self.modalities[name].shape[0]
            if mask is None:
                mask = tf.ones((tf.shape(inputs[name])[0], steps), "float32")
            outputs[name + STEP_MASK_SUFFIX] = tf.ensure_shape(tf.cast(mask, "float32"),
                                                               (None, steps))
        return outputs

    def input_names(self) -> list[str]:
        """Raw inputs it accepts: one per modality, the optional presence flags and step masks."""
        return [*self.modalities, *(n + PRESENT_SUFFIX for n in self.modalities),
                *(n + STEP_MASK_SUFFIX for n in self.step_masks)]

    def feature_specs(self) -> dict[str, keras.KerasTensor]:
        """Symbolic shapes and dtypes of the outputs (what the task model takes)."""
        specs = {}
        for name, spec in self.modalities.items():
            shape: tuple = (None, *spec.shape)
            for layer in self.converters[name]:
                shape = tuple(layer.compute_output_shape(shape))
            dtype = "int64" if spec.kind == "text" else "float32"
            specs[name] = keras.KerasTensor(shape, dtype=dtype)
            specs[name + PRESENT_SUFFIX] = keras.KerasTensor((None, 1), dtype="float32")
        for name in self.step_masks:
            specs[name + STEP_MASK_SUFFIX] = keras.KerasTensor(
                (None, self.modalities[name].shape[0]), dtype="float32")
        return specs

    def map_dataset(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``(raw inputs, labels)`` batches to ``(features, labels)``, in parallel."""
        return dataset.map(lambda x, y: (self(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "modalities": {n: spec_to_dict(s) for n, s in self.modalities.items()},
            "state": self.state,
            "step_masks": list(self.step_masks),
        }


def takes_step_mask(spec: ModalitySpec | None) -> bool:
    """Whether a modality can take a step mask: a series whose preprocessing keeps its steps."""
    return spec is not None and spec.kind == "timeseries" and not is_spectral(spec)


def dataset_step_masks(dataset: MultimodalDataset) -> list[str]:
    """Modalities whose step masks ``dataset`` provides: every split holds ``<modality>_mask``
    (``[N, T]``, 1 = observed step, 0 = imputed, as ``data_pipelines.mobifall`` emits) and the
    modality can take one (:func:`takes_step_mask`)."""
    return [name for name, spec in dataset.modalities.items()
            if takes_step_mask(spec) and all(name + DATASET_MASK_SUFFIX in arrays
                                             for arrays in dataset.splits.values())]


def add_step_masks(batches: tf.data.Dataset, dataset: MultimodalDataset, split: str,
                   names: list[str], batch_size: int) -> tf.data.Dataset:
    """Add ``<modality>_step_mask`` (float32) from the split's ``<modality>_mask`` arrays to the
    inputs of unshuffled ``(inputs, targets)`` batches of ``batch_size`` (``to_tf_dataset``)."""
    if not names:
        return batches
    arrays = dataset.splits[split]
    masks = {n + STEP_MASK_SUFFIX: np.asarray(arrays[n + DATASET_MASK_SUFFIX], np.float32)
             for n in names}
    extra = tf.data.Dataset.from_tensor_slices(masks).batch(batch_size)
    return tf.data.Dataset.zip((batches, extra)).map(
        lambda xy, m: ({**xy[0], **m}, xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
