"""The fusion contract: per-modality features and presence in, one fused representation out.

Every registered fusion subclasses :class:`Fusion` and is registered with
``@register_fusion("name")`` in a file of its own under ``mmkeras/fusion/``.

``call(features, presence, training=None)``:

- ``features``: a list with one dict per modality, in the model's modality order. For
  ``level = "intermediate"`` and ``"late"`` it is the encoder output (``tokens`` ``[B, N_i, D]``,
  ``mask`` ``[B, N_i]``, ``pooled`` ``[B, D]``; see :mod:`mmkeras.encoders.base`; ``tokens`` and
  ``mask`` may be left out unless ``uses_tokens``, ``pooled`` unless ``uses_pooled``). For
  ``level = "early"`` it is ``{"raw": x}``: the preprocessed (standardised) input itself,
  ``[B, T, C]`` series, ``[B, H, W, C]`` images, ``[B, F]`` vectors (text arrives as its
  encoder's pooled vector, since words have no low-level numeric form).
- ``presence``: ``[B, M]`` float32, 1 where the modality is present, 0 where it is absent.

It returns a dict with ``fused`` (``[B, F]``; for ``level = "late"`` these are the combined class
probabilities ``[B, num_classes]`` and the task adds no head) and, for fusions that weigh
modalities, ``modality_weights`` ``[B, M]``.

**Presence contract.** An absent modality is *excluded*, not zero-filled: whatever values its
input holds (finite), no output changes. Use :func:`where_present` (never multiply by presence:
``0 * inf`` is NaN) and :func:`masked_softmax`.

The builder passes ``embed_dim`` to every fusion and ``num_classes`` to late fusions.
"""

from __future__ import annotations

import keras

LEVELS = ("early", "intermediate", "late")


class Fusion(keras.layers.Layer):
    """Base class of the registered fusions.

    Class attributes: ``level`` (one of :data:`LEVELS`), ``returns_weights`` (whether ``call``
    returns ``modality_weights``), ``uses_tokens`` (whether ``call`` reads the encoders'
    ``tokens`` and ``mask``; when False the backbone builds its encoders with
    ``return_tokens=False``, so they return ``pooled`` only and create no token-only weights),
    ``uses_pooled`` (whether ``call`` reads ``pooled``; when False the encoders are built with
    ``return_pooled=False`` unless something else reads it, e.g. unimodal heads, so they return
    ``tokens`` and ``mask`` only and create no pooled-only weights), ``paper`` (reference, for
    the README table).
    """

    level: str = "intermediate"
    returns_weights: bool = False
    uses_tokens: bool = False
    uses_pooled: bool = True
    paper: str = ""

    def __init__(self, embed_dim: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "embed_dim": self.embed_dim}


def where_present(x, present):
    """``x`` where the example's modality is present, exact zeros elsewhere.

    ``present`` is ``[B, 1]`` (or ``[B]``); broadcast over the other axes of ``x``.
    """
    present = keras.ops.reshape(keras.ops.cast(present, "float32"),
                                (-1,) + (1,) * (len(x.shape) - 1))
    return keras.ops.where(present > 0, x, keras.ops.zeros_like(x))


def masked_softmax(logits, presence):
    """Softmax over the last axis restricted to present entries (absent ones get exactly 0).

    Example:
        >>> import numpy as np
        >>> w = masked_softmax(np.zeros((1, 3), "float32"), np.array([[1.0, 0.0, 1.0]], "float32"))
        >>> keras.ops.convert_to_numpy(w).round(2).tolist()
        [[0.5, 0.0, 0.5]]
    """
    present = keras.ops.cast(presence, "float32") > 0
    logits = keras.ops.cast(logits, "float32")
    shifted = logits - keras.ops.max(keras.ops.where(present, logits, -1e9), axis=-1, keepdims=True)
    exp = keras.ops.where(present, keras.ops.exp(keras.ops.minimum(shifted, 0.0)), 0.0)
    return exp / keras.ops.maximum(keras.ops.sum(exp, axis=-1, keepdims=True), 1e-12)
