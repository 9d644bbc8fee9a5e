"""A pretrained encoder from a TF Hub handle or a local SavedModel, as a Keras 3 layer."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from mmkeras.encoders.base import INPUT_KINDS, Encoder, masked_mean
from mmkeras.encoders.inputs import all_valid, check_input, reject_step_mask
from mmkeras.registry import register_encoder


def load_saved_model(handle: str):
    """``tf.saved_model.load`` for a local folder; ``tensorflow_hub.load`` for other handles.

    ``tensorflow_hub`` (which needs ``tf_keras`` installed) is imported only for remote handles.
    """
    if os.path.isdir(handle):
        return tf.saved_model.load(handle)
    import tensorflow_hub

    return tensorflow_hub.load(handle)


@register_encoder("hub")
class HubEncoder(Encoder):
    """Wrap a pretrained SavedModel (transfer learning from a TF Hub module, e.g. a sentence or
    audio embedding) and project its output to ``embed_dim``.

    ``handle`` is a local SavedModel folder or a TF Hub / Kaggle handle (resolved by
    ``tensorflow_hub``; no network at run time means a local copy). The model is called as
    ``obj(x)`` (TF Hub's reusable-SavedModel convention) or, with ``signature``, through
    ``obj.signatures[signature]`` (its single input); a dict result needs ``output_key`` unless
    it has one entry. The input is cast to the function's input dtype, so any input kind works
    that the wrapped function accepts. The wrapped function runs as it was saved (no
    ``training`` argument is passed).

    The SavedModel's variables become this layer's weights (saved in ``model.keras``, exported
    with the model): ``fine_tune=False`` (default) keeps them frozen and trains only the
    projection; ``fine_tune=True`` trains them too; ``trainable=False`` freezes the whole layer.
    ``from_config`` (loading ``model.keras``) reads ``handle`` again, so it must be reachable
    and trusted where the model is loaded; the saved variable values then replace its own.

    - ``tokens``: ``[B, 1, embed_dim]`` for a vector output ``[B, F]``, ``[B, N, embed_dim]``
      for a sequence output ``[B, N, F]`` (linear projection); ``mask``: all ones;
    - ``pooled``: the mean of the tokens. ``step_mask`` is not supported (must be None).

    Example:
        >>> import tempfile
        >>> module = tf.Module()
        >>> module.w = tf.Variable(tf.ones((3, 5)))
        >>> module.__call__ = tf.function(lambda x: x @ module.w,
        ...                               input_signature=[tf.TensorSpec((None, 3), tf.float32)])
        >>> path = tempfile.mkdtemp()
        >>> tf.saved_model.save(module, path)
        >>> out = HubEncoder(path, embed_dim=4)(keras.ops.ones((2, 3)))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((2, 1, 4), (2, 4))
    """

    input_kinds = INPUT_KINDS

    def __init__(
        self,
        handle: str,
        embed_dim: int = 64,
        fine_tune: bool = False,
        signature: str | None = None,
        output_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        self.handle = str(handle)
        self.fine_tune = bool(fine_tune)
        self.signature = signature
        self.output_key = output_key
        self.loaded = load_saved_model(self.handle)
        if signature is None:
            if not callable(self.loaded):
                raise ValueError(
                    f"HubEncoder: the SavedModel at {self.handle!r} is not callable; pick one of "
                    f"its signatures with signature= ({', '.join(self.loaded.signatures)})"
                )
            self.function = self.loaded
            concrete = self.loaded.__call__.concrete_functions
        else:
            if signature not in self.loaded.signatures:
                raise ValueError(
                    f"HubEncoder: signature {signature!r} not in the SavedModel at "
                    f"{self.handle!r}; it has {', '.join(self.loaded.signatures) or 'none'}"
                )
            self.function = self.loaded.signatures[signature]
            concrete = [self.function]
        inputs = concrete[0].structured_input_signature
        specs = [s for s in tf.nest.flatten(inputs) if isinstance(s, tf.TensorSpec)]
        if signature is not None and len(specs) != 1:
            raise ValueError(f"HubEncoder: signature {signature!r} takes {len(specs)} inputs; "
                             "only single-input signatures are supported")
        self.input_name = next(iter(inputs[1]), None)
        self.function_dtype = specs[0].dtype
        self.function_input_shape = tuple(specs[0].shape.as_list())
        output = self.select_output(concrete[0].structured_outputs)
        if len(output.shape) not in (2, 3) or output.shape[-1] is None:
            raise ValueError(f"HubEncoder: the SavedModel at {self.handle!r} returns shape "
                             f"{tuple(output.shape)}; expected a vector [B, F] or a sequence "
                             "[B, N, F] with a static F")
        self.output_features = int(output.shape[-1])
        seen = set()
        for function in concrete:
            for variable in function.variables:
                if variable.ref() in seen:
                    continue
                seen.add(variable.ref())
                self._track_variable(keras.Variable(
                    initializer=variable,  # wraps this very tf.Variable: training updates it
                    trainable=self.fine_tune and variable.trainable,
                    dtype=variable.dtype.name,
                    shape=variable.shape,
                    name=variable.name.split(":")[0].replace("/", "_"),
                ))
        self.tokenize = keras.layers.Dense(self.embed_dim)

    def select_output(self, result):
        """The output tensor: ``result`` itself, or its ``output_key`` (or only) entry."""
        if not isinstance(result, dict):
            return result
        if self.output_key is None and len(result) != 1:
            raise ValueError(f"HubEncoder: the SavedModel at {self.handle!r} returns "
                             f"{sorted(result)}; choose one with output_key=")
        if self.output_key is not None and self.output_key not in result:
            raise ValueError(f"HubEncoder: output_key {self.output_key!r} not among the "
                             f"SavedModel's outputs {sorted(result)}")
        return result[self.output_key] if self.output_key else next(iter(result.values()))

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        if not tf.TensorShape(self.function_input_shape).is_compatible_with(input_shape):
            raise ValueError(
                f"HubEncoder: the SavedModel at {self.handle!r} takes "
                f"{self.function_input_shape} {self.function_dtype.name}; got input of shape "
                f"{tuple(input_shape)}"
            )
        self.tokenize.build((input_shape[0], None, self.output_features))

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        reject_step_mask(self, step_mask)
        x = tf.cast(x, self.function_dtype)
        result = self.function(**{self.input_name: x}) if self.signature else self.function(x)
        result = self.select_output(result)
        if len(result.shape) == 2:
            result = result[:, None, :]
        tokens = self.tokenize(tf.cast(result, self.compute_dtype))
        mask = all_valid(tokens)
        return self.outputs(masked_mean(tokens, mask), tokens, mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "handle": self.handle,
            "fine_tune": self.fine_tune,
            "signature": self.signature,
            "output_key": self.output_key,
        }
