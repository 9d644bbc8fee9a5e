"""Early fusion on one common timeline: series resampled and stacked channel-wise, then convs."""

from __future__ import annotations

import keras
import numpy as np

from mmkeras.fusion.base import Fusion
from mmkeras.fusion.common import check_inputs, drop_absent
from mmkeras.registry import ENCODERS, register_fusion, split_spec

MIN_STEPS = 8


def resample_matrix(length: int, steps: int) -> np.ndarray:
    """``[steps, length]`` linear map from a series of ``length`` samples onto ``steps``.

    Fewer steps: average pooling over equal (fractional) bins, each sample weighted by its
    overlap with the bin. More steps: linear interpolation at the bin centres (clamped at the
    ends). Rows sum to 1, so a constant series stays constant.

    Example:
        >>> resample_matrix(4, 2).tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
        >>> resample_matrix(2, 4).tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    if length < 1 or steps < 1:
        raise ValueError(f"resample_matrix: length and steps must be >= 1, got {length}, {steps}")
    matrix = np.zeros((steps, length))
    if steps <= length:
        width = length / steps
        edges = np.arange(steps + 1) * width
        for k in range(steps):
            for i in range(int(np.floor(edges[k])), min(length, int(np.ceil(edges[k + 1])))):
                matrix[k, i] = (min(edges[k + 1], i + 1) - max(edges[k], i)) / width
    else:
        centres = np.clip((np.arange(steps) + 0.5) * length / steps - 0.5, 0, length - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, length - 1)
        np.add.at(matrix, (np.arange(steps), low), 1 - (centres - low))
        np.add.at(matrix, (np.arange(steps), high), centres - low)
    return matrix.astype("float32")


@register_fusion("early_timeline")
class EarlyTimelineFusion(Fusion):
    """Early fusion of aligned time series on one timeline (data-level fusion).

    Every series ``{"raw": [B, T_m, C_m]}`` is resampled onto ``steps`` steps (default: the
    shortest series' length, at least 8) by :func:`resample_matrix` (one matrix product in the
    graph); vectors ``[B, F]`` are repeated along time as extra channels; one presence channel
    per modality follows. An absent modality's channels are exactly 0. A shared stack of
    ``conv_layers`` ``Conv1D(embed_dim, kernel_size, relu)`` and global average pooling give
    ``fused`` ``[B, embed_dim]``; or, with ``encoder`` (a registered sequence encoder's spec,
    e.g. ``{"name": "conv1d", "filters": [32, 64, 64]}``), that encoder's ``pooled`` output of
    the stacked channels does. Images have no timeline: use the ``early`` fusion for them.
    (Data-level fusion of sensor streams, e.g. Ordóñez and Roggen, 2016, DeepConvLSTM.)

    Example:
        >>> import numpy as np
        >>> features = [{"raw": np.ones((2, 100, 3), "float32")},
        ...             {"raw": np.ones((2, 10, 2), "float32")},
        ...             {"raw": np.ones((2, 4), "float32")}]
        >>> out = EarlyTimelineFusion(embed_dim=6)(features, np.ones((2, 3), "float32"))
        >>> tuple(out["fused"].shape)
        (2, 6)
    """

    level = "early"
    paper = "Ordóñez and Roggen, 2016, DeepConvLSTM (sensor channels fused at the input)"

    def __init__(self, embed_dim: int = 64, steps: int | None = None, conv_layers: int = 2,
                 kernel_size: int = 3, encoder: str | dict | None = None, **kwargs) -> None:
        super().__init__(embed_dim=embed_dim, **kwargs)
        for name, value, low in (("steps", steps, 1), ("conv_layers", conv_layers, 1),
                                 ("kernel_size", kernel_size, 1)):
            if value is not None and int(value) < low:
                raise ValueError(f"EarlyTimelineFusion: {name} must be >= {low}, got {value}")
        self.steps = None if steps is None else int(steps)
        self.conv_layers = int(conv_layers)
        self.kernel_size = int(kernel_size)
        self.encoder = encoder
        if encoder is not None:
            name, encoder_kwargs = split_spec(encoder, "EarlyTimelineFusion: encoder")
            cls = ENCODERS.get(name)
            if cls.input_kinds and "sequence" not in cls.input_kinds:
                raise ValueError(f"EarlyTimelineFusion: encoder {name!r} takes "
                                 f"{list(cls.input_kinds)} inputs, not the stacked series")
            self.stack_encoder = cls(**{"embed_dim": self.embed_dim, **encoder_kwargs,
                                        "return_tokens": False, "return_pooled": True},
                                     name="stack_encoder")

    def build(self, features_shape, presence_shape) -> None:
        num_modalities = check_inputs(self, features_shape, presence_shape, ("raw",))
        shapes = [tuple(feature["raw"]) for feature in features_shape]
        for m, shape in enumerate(shapes):
            if len(shape) == 4:
                raise ValueError(f"EarlyTimelineFusion: features[{m}] is an image {shape[1:]}, "
                                 "which has no timeline; use the 'early' fusion for images")
            if len(shape) not in (2, 3) or shape[-1] is None or (len(shape) == 3 and not shape[1]):
                raise ValueError(f"EarlyTimelineFusion: features[{m}]['raw'] must be a series "
                                 f"[B, T, C] or a vector [B, F] of known sizes, got {shape}")
        lengths = [shape[1] for shape in shapes if len(shape) == 3]
        if not lengths:
            raise ValueError("EarlyTimelineFusion: no time series among the features; "
                             "use the 'early' fusion")
        self.timeline = self.steps or max(MIN_STEPS, min(lengths))
        self.matrices = [resample_matrix(s[1], self.timeline) if len(s) == 3 else None
                         for s in shapes]
        channels = sum(shape[-1] for shape in shapes) + num_modalities
        self.convs = []
        if self.encoder is not None:
            self.stack_encoder.build((None, self.timeline, channels))
            return
        for i in range(self.conv_layers):
            conv = keras.layers.Conv1D(self.embed_dim, self.kernel_size, padding="same",
                                       activation="relu", name=f"conv_{i}")
            conv.build((None, self.timeline, channels if i == 0 else self.embed_dim))
            self.convs.append(conv)

    def call(self, features, presence, training=None) -> dict:
        ops = keras.ops
        channels = []
        for feature, matrix in zip(drop_absent(features, presence), self.matrices, strict=True):
            x = feature["raw"]
            if matrix is None:  # vector: the same values at every step
                channels.append(ops.repeat(x[:, None, :], self.timeline, axis=1))
            else:
                channels.append(ops.einsum("st,btc->bsc", ops.cast(matrix, x.dtype), x))
        flags = ops.cast(presence, channels[0].dtype)
        channels.append(ops.repeat(flags[:, None, :], self.timeline, axis=1))
        x = ops.concatenate(channels, axis=-1)
        if self.encoder is not None:
            return {"fused": self.stack_encoder(x)["pooled"]}
        for conv in self.convs:
            x = conv(x)
        return {"fused": ops.mean(x, axis=1)}

    def get_config(self) -> dict:
        return {**super().get_config(), "steps": self.steps, "conv_layers": self.conv_layers,
                "kernel_size": self.kernel_size, "encoder": self.encoder}
