"""The encoder contract: one modality's preprocessed input in, tokens + mask + pooled vector out.

Every registered encoder subclasses :class:`Encoder` and is registered with
``@register_encoder("name")`` (see :mod:`mmkeras.registry`), in a file of its own under
``mmkeras/encoders/``; the package imports every module in the folder, so nothing else changes.

``call(x, step_mask=None, training=None)`` returns a dict:

- ``tokens``: ``[batch, N, embed_dim]``, a sequence for attention fusions (time steps,
  spectrogram frames, image patches, words; ``N = 1`` for a tabular vector);
- ``mask``: ``[batch, N]`` float32, 1 for a valid token, 0 for padding or missing steps;
- ``pooled``: ``[batch, embed_dim]``, one vector for the example (masked tokens excluded).

``step_mask`` (``[batch, T]``, 1 = observed, 0 = imputed) comes from imputation for time
series. Encoders that take one set ``takes_step_mask = True`` and guarantee: the values at masked
steps reach no output (the steps are zeroed before any weight sees them, so changing them changes
neither ``tokens``, ``mask`` nor ``pooled``), and ``mask`` is the step mask carried to token
resolution (a token is valid when any of its steps is). The others refuse a step mask. In a
model, the step mask is the optional input ``<modality>_step_mask`` (see
:mod:`mmkeras.models.backbone`); left out, every step counts as observed.

``return_tokens=False`` (set by the model builder when the fusion reads only ``pooled``, see
``Fusion.uses_tokens``): the encoder returns ``{"pooled": ...}`` only and builds no weight that
serves the tokens alone, so no weight goes without a gradient. ``return_pooled=False``, its
mirror image (set when nothing reads ``pooled``, see ``Fusion.uses_pooled``): the encoder returns
``{"tokens", "mask"}`` only and builds no weight that serves ``pooled`` alone. Both False is
refused.

The model builder passes ``embed_dim``, ``return_tokens`` and ``return_pooled`` to every encoder
and ``vocab_size`` to encoders of ``"tokens"`` inputs; everything else comes from the config
(``encoders: {audio: {name: ...}}``).
"""

from __future__ import annotations

import keras

# What a modality looks like after preprocessing, i.e. what an encoder receives.
INPUT_KINDS = ("sequence", "image", "tokens", "vector")


class Encoder(keras.layers.Layer):
    """Base class of the registered encoders.

    Subclasses set ``input_kinds`` (a subset of :data:`INPUT_KINDS`) and ``takes_step_mask``,
    take ``embed_dim``, ``return_tokens``, ``return_pooled`` and their own keyword arguments, and
    return every constructor argument from ``get_config``.
    """

    input_kinds: tuple[str, ...] = ()
    takes_step_mask: bool = False

    def __init__(self, embed_dim: int = 64, return_tokens: bool = True,
                 return_pooled: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(embed_dim) < 1:
            raise ValueError(f"{type(self).__name__}: embed_dim must be >= 1, got {embed_dim}")
        if not return_tokens and not return_pooled:
            raise ValueError(f"{type(self).__name__}: return_tokens and return_pooled are both "
                             f"False, so the encoder would return nothing; keep one of them")
        self.embed_dim = int(embed_dim)
        self.return_tokens = bool(return_tokens)
        self.return_pooled = bool(return_pooled)

    def outputs(self, pooled=None, tokens=None, mask=None) -> dict:
        """The output dict: ``pooled`` only when ``return_tokens`` is False, ``tokens`` and
        ``mask`` only when ``return_pooled`` is False."""
        out = {"tokens": tokens, "mask": mask} if self.return_tokens else {}
        if self.return_pooled:
            out["pooled"] = pooled
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "embed_dim": self.embed_dim,
                "return_tokens": self.return_tokens, "return_pooled": self.return_pooled}


def masked_mean(tokens, mask):
    """Mean of ``tokens`` ``[B, N, D]`` over valid positions of ``mask`` ``[B, N]``.

    Example:
        >>> import numpy as np
        >>> t = np.array([[[1.0], [3.0], [100.0]]], "float32")
        >>> keras.ops.convert_to_numpy(masked_mean(t, np.array([[1.0, 1.0, 0.0]], "float32")))
        array([[2.]], dtype=float32)
    """
    mask = keras.ops.cast(mask, tokens.dtype)[..., None]
    total = keras.ops.sum(keras.ops.where(mask > 0, tokens, 0), axis=1)
    return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1)


def downsample_mask(mask, stride: int, length: int):
    """Carry a step mask ``[B, T]`` to ``length`` tokens made of ``stride`` steps each."""
    mask = keras.ops.cast(mask, "float32")
    pad = length * stride - keras.ops.shape(mask)[1]
    mask = keras.ops.pad(mask, [[0, 0], [0, pad]])
    return keras.ops.max(keras.ops.reshape(mask, (-1, length, stride)), axis=-1)
