"""A ``keras.applications`` backbone as an image encoder."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from mmkeras.encoders.base import Encoder, masked_mean
from mmkeras.encoders.inputs import all_valid, check_input, reject_step_mask
from mmkeras.registry import register_encoder


@register_encoder("keras_application")
class KerasApplicationEncoder(Encoder):
    """A convolutional backbone from ``keras.applications`` by name (transfer learning with an
    ImageNet-style network, Yosinski et al. 2014; default MobileNetV3-Small, Howard et al. 2019).

    Images are resized inside the layer to ``input_size`` x ``input_size`` (bilinear) and grey
    images are repeated to 3 channels. ``weights`` is ``None`` (random initialisation) or the
    path of a local weights file (``.weights.h5``, e.g. saved from ``keras.applications`` with
    ``save_weights``); nothing is downloaded, so ``"imagenet"`` is refused. The file is read
    when the layer is constructed, not when a saved model is loaded (``from_config``): the
    model's own saved variables replace it then. The inputs are standardised already, so a
    backbone's built-in rescaling (``include_preprocessing``) is off unless ``backbone_kwargs``
    turns it on; ``backbone_kwargs`` go to the application function (``alpha``, ...).

    - ``tokens``: the cells of the backbone's last feature map (row by row), projected to
      ``embed_dim``; ``mask``: all ones; ``pooled``: the mean of the tokens.

    Example:
        >>> enc = KerasApplicationEncoder(embed_dim=8, input_size=32)
        >>> out = enc(keras.ops.zeros((2, 28, 28, 1)))
        >>> tuple(out["tokens"].shape), tuple(out["pooled"].shape)
        ((2, 1, 8), (2, 8))
    """

    input_kinds = ("image",)

    def __init__(
        self,
        embed_dim: int = 64,
        architecture: str = "MobileNetV3Small",
        weights: str | None = None,
        input_size: int = 96,
        backbone_kwargs: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(embed_dim, **kwargs)
        factory = getattr(keras.applications, str(architecture), None)
        if not callable(factory) or not str(architecture)[:1].isupper():
            names = [n for n in dir(keras.applications) if n[:1].isupper()]
            raise ValueError(f"KerasApplicationEncoder: architecture {architecture!r} is not in "
                             f"keras.applications; one of {', '.join(names)}")
        if weights == "imagenet":
            raise ValueError(
                "KerasApplicationEncoder: weights='imagenet' would download at run time; save "
                "the pretrained weights to a local .weights.h5 file once and pass its path"
            )
        if int(input_size) < 32:
            raise ValueError(f"KerasApplicationEncoder: input_size must be >= 32, got {input_size}")
        self.architecture = str(architecture)
        self.weights_file = None if weights is None else str(weights)
        self.input_size = int(input_size)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        options = {"include_top": False, "weights": self.weights_file,
                   "input_shape": (self.input_size, self.input_size, 3)}
        if "include_preprocessing" in inspect.signature(factory).parameters:
            options["include_preprocessing"] = False
        self.backbone = factory(**{**options, **self.backbone_kwargs})
        self.tokenize = keras.layers.Dense(self.embed_dim)

    def build(self, input_shape: tuple) -> None:
        check_input(self, input_shape)
        if input_shape[-1] not in (1, 3):
            raise ValueError(f"KerasApplicationEncoder takes grey or RGB images (1 or 3 "
                             f"channels), got input shape {tuple(input_shape)}")
        self.tokenize.build(self.backbone.output_shape)

    def call(self, x, step_mask=None, training=None):
        check_input(self, x.shape, x.dtype)
        reject_step_mask(self, step_mask)
        if x.shape[-1] == 1:
            x = keras.ops.repeat(x, 3, axis=-1)
        x = keras.ops.image.resize(x, (self.input_size, self.input_size))
        features = self.backbone(x, training=training)
        _, height, width, channels = self.backbone.output_shape
        tokens = self.tokenize(keras.ops.reshape(features, (-1, height * width, channels)))
        mask = all_valid(tokens)
        return self.outputs(masked_mean(tokens, mask), tokens, mask)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "architecture": self.architecture,
            "weights": self.weights_file,
            "input_size": self.input_size,
            "backbone_kwargs": self.backbone_kwargs,
        }

    @classmethod
    def from_config(cls, config: dict) -> KerasApplicationEncoder:
        """Rebuild without reading the weights file (a loaded model restores its own)."""
        layer = cls(**{**config, "weights": None})
        layer.weights_file = config.get("weights")
        return layer
