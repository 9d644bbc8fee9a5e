"""The multimodal preprocessor: raw inputs to model features, with state fitted on train only.

Like KerasHub's ``Preprocessor``, it is a layer that runs in the ``tf.data`` pipeline while
training (``dataset.map(preprocessor)``) and is composed in front of the model for inference and
export (:func:`mmkeras.models.end_to_end`), so a served model still takes raw inputs. Per modality
it holds the fixed transform and the fitted state (log-mel + standardisation for audio, log
power spectrogram or differences + standardisation for sensor series, per-channel
standardisation for images, the vocabulary for text); see :mod:`mmkeras.data.preprocessing`.

It also emits one presence flag per modality, ``<modality>_present`` (``[batch, 1]`` float32):
the value given in the inputs, or 1 (present) when the input has none.

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
import tensorflow as tf

from mmkeras.data.dataset import ModalitySpec
from mmkeras.data.preprocessing import preprocessing_layers

PRESENT_SUFFIX = "_present"


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
    """

    def __init__(self, modalities: dict[str, dict], state: dict[str, dict], **kwargs) -> None:
        super().__init__(**kwargs)
        missing = [n for n in modalities if n not in state]
        if missing:
            raise ValueError(f"MultimodalPreprocessor: no fitted state for modalities {missing}")
        self.modalities = {n: spec_from_dict(s, n) for n, s in modalities.items()}
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
        return outputs

    def input_names(self) -> list[str]:
        """Raw inputs it accepts: one per modality and the optional presence flags."""
        return [*self.modalities, *(n + PRESENT_SUFFIX for n in self.modalities)]

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
        return specs

    def map_dataset(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``(raw inputs, labels)`` batches to ``(features, labels)``, in parallel."""
        return dataset.map(lambda x, y: (self(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "modalities": {n: spec_to_dict(s) for n, s in self.modalities.items()},
            "state": self.state,
        }
