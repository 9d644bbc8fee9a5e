"""Bag-of-embeddings encoder for token ids from ``keras.layers.TextVectorization``."""

from __future__ import annotations

import keras

from mmkeras.encoders.base import Encoder, masked_mean
from mmkeras.encoders.inputs import check_input, reject_step_mask
from mmkeras.registry import register_encoder


@register_encoder("text_bag")
class TextEncoder(Encoder):
    """Average of word embeddings (the fastText / "deep averaging network" idea, Joulin et al.
    2017, Iyyer et al. 2015): word order is ignored, which is robust for short notes.

    - ``tokens``: each word's embedding projected (linearly) to ``embed_dim``;
    - ``mask``: 1 where the token id is not 0 (padding);
    - ``pooled``: ``relu`` of the masked mean of the tokens (the same as a ``relu`` Dense of the
      mean word embedding, since the projection is linear).

    Example:
        >>> enc = TextEncoder(vocab_size=100, embed_dim=16)
        >>> out = enc(keras.ops.convert_to_tensor([[5, 7, 0, 0]], dtype="int64"))
        >>> tuple(out["tokens"].shape), keras.ops.convert_to_numpy(out["mask"]).tolist()
        ((1, 4, 16), [[1.0, 1.0, 0.0, 0.0]])
    """

    input_kinds = ("tokens",)

    def __init__(self, vocab_size: int, embed_dim: int = 64, token_dim: int = 32, **kwargs):
        super().__init__(embed_dim, **kwargs)
        if int(vocab_size) < 2 or int(token_dim) < 1:
            raise ValueError(f"TextEncoder: vocab_size must be >= 2 and token_dim >= 1, got "
                             f"vocab_size={vocab_size}, token_dim={token_dim}")
        self.vocab_size = int(vocab_size)
        self.token_dim = int(token_dim)
        self.embedding = keras.layers.Embedding(self.vocab_size, self.token_dim)
        self.project = keras.layers.Dense(self.embed_dim)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        self.embedding.build(input_shape)
        self.project.build((*input_shape, self.token_dim))

    def call(self, token_ids, step_mask=None, training=None):
        check_input(self, token_ids.shape, token_ids.dtype)
        reject_step_mask(self, step_mask)
        mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")
        tokens = self.project(self.embedding(token_ids))
        return self.outputs(keras.ops.relu(masked_mean(tokens, mask)), tokens, mask)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size, "token_dim": self.token_dim}
