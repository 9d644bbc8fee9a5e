"""Streaming per-feature statistics and in-graph standardisation.

Statistics are per feature over the **last axis**; every leading axis is reduced. That one
rule covers the usual modalities:

* tabular / sensor ``[N, C]`` or ``[N, T, C]``: per channel ``C``;
* images ``[N, H, W, 3]``: per colour channel (3 statistics, pooled over batch and pixels);
* audio log-mel ``[frames, mels]`` or ``[N, frames, mels]``: per mel band.

Example:
    >>> import numpy as np
    >>> images = np.random.default_rng(0).random((4, 8, 8, 3))   # [N, H, W, C]
    >>> std = fit_stats([images[:2], images[2:]], method="zscore")
    >>> std.center.shape                                          # one value per channel
    (3,)
    >>> np.allclose(std.center, images.reshape(-1, 3).mean(axis=0))
    True

Fit on the **training split only** and put ``Standardizer.to_layer()`` at the top of the
model, so the exported SavedModel consumes raw values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np

Method = Literal["zscore", "minmax", "robust"]
METHODS: tuple[str, ...] = ("zscore", "minmax", "robust")

DEFAULT_RESERVOIR_SIZE = 16_384
"""Per-feature sample size kept for quantiles (median/IQR): 128 KiB of values per feature."""


class RunningStats:
    """One-pass, mergeable per-feature count/mean/variance/min/max (+ optional quantiles).

    Moments use float64 accumulators: each batch is reduced with a two-pass mean/M2 and
    folded in with Chan et al.'s parallel update
    ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``, which stays accurate for data with a
    large offset (e.g. ``1e9 + noise``) where a naive sum of squares cancels catastrophically.
    NaN entries are ignored per feature, so ``count`` is per feature; +-inf raises.

    Quantiles (for robust scaling) come from a bounded-memory **bottom-k sample**: every
    non-NaN value gets an i.i.d. uniform key and each feature keeps the ``reservoir_size``
    values with the smallest keys. That is a uniform sample without replacement, so it is

    * **exact** while a feature has at most ``reservoir_size`` values (all are kept);
    * otherwise approximate: the estimated q-quantile sits at a true rank whose standard
      error is about ``sqrt(q * (1 - q) / k)`` (smaller by ``sqrt(1 - k/n)``). For the
      default ``k = 16384`` that is 0.39 percentile points for the median and 0.34 for the
      quartiles, i.e. within about +-1.2 / +-1.0 points with 99.7 % probability;
    * mergeable: the union of two samples keeps the smallest keys. Give workers whose
      statistics will be merged *different* seeds (e.g. ``seed=(base, worker_id)``);
      equal seeds give correlated keys.

    ``reservoir_size=0`` disables the sample (moments and min/max only; cheaper).

    Example:
        >>> a, b = RunningStats(), RunningStats(seed=1)
        >>> a.update(np.array([[1.0, 10.0], [3.0, np.nan]]))
        >>> b.update(np.array([[5.0, 20.0]]))
        >>> s = a.merge(b)
        >>> s.count.tolist(), s.mean.tolist()
        ([3, 2], [3.0, 15.0])
    """

    def __init__(
        self,
        reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
        seed: int | Sequence[int] | None = 0,
    ) -> None:
        if reservoir_size < 0:
            raise ValueError(f"reservoir_size must be >= 0, got {reservoir_size}")
        self.reservoir_size = int(reservoir_size)
        self._rng = np.random.default_rng(seed)
        self._n: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self._sample: np.ndarray | None = None

    # ------------------------------------------------------------------ updates
    def update(self, batch: np.ndarray) -> None:
        """Fold a batch ``[..., C]`` into the statistics (NaN ignored per feature)."""
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim == 0:
            raise ValueError("batch must have at least one axis (features on the last axis)")
        x = x.reshape(-1, x.shape[-1])
        if np.isinf(x).any():
            raise ValueError("batch contains +-inf; only NaN is treated as missing")
        if self._n is None:
            self._init_state(x.shape[1])
        elif x.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[1]}")

        valid = ~np.isnan(x)
        n_b = valid.sum(axis=0).astype(np.int64)
        safe_n = np.maximum(n_b, 1)
        mean_b = np.where(valid, x, 0.0).sum(axis=0) / safe_n
        m2_b = (np.where(valid, x - mean_b, 0.0) ** 2).sum(axis=0)
        min_b = np.where(valid, x, np.inf).min(axis=0, initial=np.inf)
        max_b = np.where(valid, x, -np.inf).max(axis=0, initial=-np.inf)
        self._n, self._mean, self._m2 = _chan_merge(
            self._n, self._mean, self._m2, n_b, mean_b, m2_b
        )
        self._min = np.minimum(self._min, min_b)
        self._max = np.maximum(self._max, max_b)

        if self.reservoir_size and x.shape[0]:
            keys = self._rng.random(x.shape)
            keys[~valid] = np.inf
            # Rows that cannot beat the current k-th smallest key of any feature are skipped,
            # so once the sample is full the cost per row falls to O(k / n).
            cand = (keys < self._keys.max(axis=0)).any(axis=1)
            self._keys, self._sample = _bottom_k(
                np.concatenate([self._keys, keys[cand]]),
                np.concatenate([self._sample, x[cand]]),
                self.reservoir_size,
            )

    def merge(self, other: RunningStats) -> RunningStats:
        """Return the statistics of both inputs combined (neither input is modified)."""
        if other._n is None:
            return self._copy(self.reservoir_size)
        if self._n is None:
            return other._copy(other.reservoir_size)
        if other.n_features != self.n_features:
            raise ValueError(f"feature mismatch: {self.n_features} vs {other.n_features}")
        k = min(self.reservoir_size, other.reservoir_size)
        out = self._copy(k)
        out._n, out._mean, out._m2 = _chan_merge(
            self._n, self._mean, self._m2, other._n, other._mean, other._m2
        )
        out._min = np.minimum(self._min, other._min)
        out._max = np.maximum(self._max, other._max)
        if k:
            out._keys, out._sample = _bottom_k(
                np.concatenate([self._keys, other._keys]),
                np.concatenate([self._sample, other._sample]),
                k,
            )
        return out

    # --------------------------------------------------------------- properties
    @property
    def n_features(self) -> int | None:
        """Number of features (last-axis size), ``None`` before the first update."""
        return None if self._n is None else int(self._n.shape[0])

    @property
    def count(self) -> np.ndarray:
        """Non-NaN values seen per feature (int64)."""
        return self._state("_n").copy()

    @property
    def mean(self) -> np.ndarray:
        """Per-feature mean (NaN for features with no values)."""
        return np.where(self._state("_n") > 0, self._mean, np.nan)

    @property
    def variance(self) -> np.ndarray:
        """Per-feature population variance (``ddof=0``)."""
        n = self._state("_n")
        return np.where(n > 0, self._m2 / np.maximum(n, 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        """Per-feature population standard deviation."""
        return np.sqrt(self.variance)

    @property
    def min(self) -> np.ndarray:
        """Per-feature minimum (NaN for features with no values)."""
        return np.where(self._state("_n") > 0, self._min, np.nan)

    @property
    def max(self) -> np.ndarray:
        """Per-feature maximum (NaN for features with no values)."""
        return np.where(self._state("_n") > 0, self._max, np.nan)

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Per-feature quantile(s) with numpy's linear interpolation; shape ``[*q.shape, C]``.

        Exact while ``count <= reservoir_size``; see the class docstring for the error.
        """
        if not self.reservoir_size:
            raise ValueError("quantiles need reservoir_size > 0")
        n = self._state("_n")
        if (n == 0).any():
            raise ValueError(f"features without values: {np.flatnonzero(n == 0).tolist()}")
        return np.nanquantile(self._sample, q, axis=0)

    # ------------------------------------------------------------------ helpers
    def _init_state(self, c: int) -> None:
        self._n = np.zeros(c, np.int64)
        self._mean = np.zeros(c)
        self._m2 = np.zeros(c)
        self._min = np.full(c, np.inf)
        self._max = np.full(c, -np.inf)
        self._keys = np.full((self.reservoir_size, c), np.inf)
        self._sample = np.full((self.reservoir_size, c), np.nan)

    def _state(self, name: str) -> np.ndarray:
        if self._n is None:
            raise ValueError("no data: call update() first")
        return getattr(self, name)

    def _copy(self, reservoir_size: int) -> RunningStats:
        out = RunningStats(reservoir_size=reservoir_size)
        out._rng = self._rng.spawn(1)[0]
        for name in ("_n", "_mean", "_m2", "_min", "_max"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value.copy())
        if self._keys is not None:
            out._keys, out._sample = _bottom_k(self._keys, self._sample, reservoir_size)
        return out


def _check_features(shape: tuple, n_features: int) -> None:
    """Raise ValueError unless the last axis of ``shape`` holds ``n_features`` features."""
    got = shape[-1] if len(shape) else None
    if got is not None and got != n_features:
        raise ValueError(
            f"expected {n_features} features on the last axis (as fitted), got {got} "
            f"(input shape {tuple(shape)})"
        )
    if not len(shape):
        raise ValueError(f"expected [..., {n_features}] input, got a scalar")


def _chan_merge(
    n_a: np.ndarray,
    mean_a: np.ndarray,
    m2_a: np.ndarray,
    n_b: np.ndarray,
    mean_b: np.ndarray,
    m2_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al. (1979) pairwise merge of (count, mean, M2), elementwise per feature."""
    n = n_a + n_b
    safe_n = np.maximum(n, 1).astype(np.float64)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe_n)
    m2 = m2_a + m2_b + delta**2 * (n_a.astype(np.float64) * n_b / safe_n)
    return n, mean, m2


def _bottom_k(keys: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column, keep the ``k`` rows with the smallest keys (padding with inf/NaN)."""
    if k == 0:
        return keys[:0].copy(), values[:0].copy()
    if keys.shape[0] < k:
        pad = k - keys.shape[0]
        keys = np.concatenate([keys, np.full((pad, keys.shape[1]), np.inf)])
        values = np.concatenate([values, np.full((pad, values.shape[1]), np.nan)])
    if keys.shape[0] == k:
        return keys.copy(), values.copy()
    idx = np.argpartition(keys, k - 1, axis=0)[:k]
    return np.take_along_axis(keys, idx, axis=0), np.take_along_axis(values, idx, axis=0)


@keras.saving.register_keras_serializable(package="mmkeras")
class Rescale(keras.layers.Layer):
    """``(x - center) / scale`` per feature on the last axis; constants live in the config.

    Example:
        >>> layer = Rescale(center=[0.0, 10.0], scale=[2.0, 5.0])
        >>> np.asarray(layer(np.array([[2.0, 20.0]]))).tolist()
        [[1.0, 2.0]]
    """

    def __init__(self, center: Sequence[float], scale: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.center = np.asarray(center, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        if self.center.shape != self.scale.shape or self.center.ndim != 1:
            raise ValueError("center and scale must be 1-D arrays of equal length")

    def build(self, input_shape: tuple) -> None:
        _check_features(input_shape, self.center.shape[0])
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        inputs = keras.ops.cast(inputs, self.compute_dtype)  # raw ints (e.g. uint8 pixels) too
        center = keras.ops.convert_to_tensor(self.center, dtype=self.compute_dtype)
        scale = keras.ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        return (inputs - center) / scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(center=self.center.tolist(), scale=self.scale.tolist())
        return config


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Frozen per-feature affine standardisation ``(x - center) / scale`` (float64).

    * ``zscore``: center = mean, scale = population std;
    * ``minmax``: center = min, scale = max - min (training range -> [0, 1], unclipped);
    * ``robust``: center = median, scale = IQR (q75 - q25).

    **Zero scale**: constant features (min == max, or a single value) and any scale below
    ``keras.config.epsilon()`` (1e-7, the floor Keras' ``Normalization`` applies) get
    ``scale = 1``, so they map to ``x - center`` (0 on the training data) instead of inf/NaN.

    Example:
        >>> s = Standardizer("minmax", np.array([0.0, 5.0]), np.array([10.0, 1.0]))
        >>> s.transform(np.array([[5.0, 5.0]])).tolist()
        [[0.5, 0.0]]
        >>> Standardizer.from_dict(s.to_dict()) == s
        True
    """

    method: str
    center: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        center = np.array(self.center, dtype=np.float64)
        scale = np.array(self.scale, dtype=np.float64)
        if center.ndim != 1 or center.shape != scale.shape:
            raise ValueError("center and scale must be 1-D arrays of equal length")
        if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("center must be finite and scale finite and > 0")
        center.flags.writeable = False
        scale.flags.writeable = False
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Standardizer):
            return NotImplemented
        return (
            self.method == other.method
            and np.array_equal(self.center, other.center)
            and np.array_equal(self.scale, other.scale)
        )

    @classmethod
    def from_stats(cls, stats: RunningStats, method: Method = "zscore") -> Standardizer:
        """Build from fitted ``RunningStats`` (``robust`` needs ``reservoir_size > 0``)."""
        n = stats.count
        if (n == 0).any():
            raise ValueError(f"features without values: {np.flatnonzero(n == 0).tolist()}")
        if method == "zscore":
            center, scale = stats.mean, stats.std
        elif method == "minmax":
            center, scale = stats.min, stats.max - stats.min
        elif method == "robust":
            q25, q50, q75 = stats.quantile([0.25, 0.5, 0.75])
            center, scale = q50, q75 - q25
        else:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        constant = (stats.max == stats.min) | (scale < keras.config.epsilon())
        return cls(method, center, np.where(constant, 1.0, scale))

    def pooled(self, groups: int) -> Standardizer:
        """One center and scale per run of ``n_features // groups`` consecutive features.

        ``zscore`` only: the group's mean and population std, exact when every feature of a
        group was fitted on the same number of values (the bins of one channel's spectrum).

        Example:
            >>> s = Standardizer("zscore", np.array([0.0, 2.0, 5.0, 5.0]), np.ones(4))
            >>> s.pooled(2).center.tolist(), s.pooled(2).scale.round(3).tolist()
            ([1.0, 1.0, 5.0, 5.0], [1.414, 1.414, 1.0, 1.0])
        """
        if self.method != "zscore":
            raise ValueError(f"pooled() needs a zscore standardizer, got {self.method!r}")
        if groups < 1 or self.n_features % groups:
            raise ValueError(f"{self.n_features} features do not split into {groups} equal "
                             f"groups")
        center = self.center.reshape(groups, -1)
        mean = center.mean(axis=1, keepdims=True)
        variance = (self.scale.reshape(groups, -1) ** 2 + (center - mean) ** 2).mean(axis=1)
        size = center.shape[1]
        return Standardizer("zscore", np.repeat(mean[:, 0], size),
                            np.repeat(np.sqrt(variance), size))

    @property
    def n_features(self) -> int:
        return int(self.center.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise ``[..., C]`` in numpy (float64); NaN stays NaN."""
        x = np.asarray(x, dtype=np.float64)
        _check_features(x.shape, self.n_features)
        return (x - self.center) / self.scale

    def to_layer(self, name: str | None = None) -> keras.layers.Layer:
        """Keras layer doing ``transform`` in the graph (float32 compute by default).

        ``zscore`` -> ``keras.layers.Normalization(axis=-1, mean, variance=scale**2)``;
        ``minmax``/``robust`` -> :class:`Rescale`. Both are serialisable in ``.keras`` files.
        Values are cast to the layer's compute dtype: raw inputs with a large offset relative
        to their spread (e.g. 1e9 + O(1) noise) lose precision in float32.
        """
        if self.method == "zscore":
            return keras.layers.Normalization(
                axis=-1, mean=self.center, variance=self.scale**2, name=name
            )
        return Rescale(self.center, self.scale, name=name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (floats round-trip exactly through ``json``)."""
        return {"method": self.method, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(d["method"], np.asarray(d["center"]), np.asarray(d["scale"]))


def fit_stats(
    batches: Iterable[np.ndarray] | np.ndarray,
    method: Method = "zscore",
    *,
    reservoir_size: int = DEFAULT_RESERVOIR_SIZE,
    seed: int | Sequence[int] | None = 0,
) -> Standardizer:
    """Fit a :class:`Standardizer` in one streaming pass over training batches ``[..., C]``.

    A single ndarray is treated as one batch. Every batch needs at least two axes: a 1-D array
    is ambiguous (N values of one feature, or one sample of N features) and is refused;
    reshape it to ``[N, 1]`` for one feature. ``reservoir_size``/``seed`` matter only for
    ``robust`` (see :class:`RunningStats` for the quantile error).

    Example:
        >>> logmel = np.random.default_rng(0).normal(size=(2, 100, 64))  # [clips, frames, mels]
        >>> fit_stats(iter(logmel), "robust").center.shape               # per mel band
        (64,)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    stats = RunningStats(reservoir_size if method == "robust" else 0, seed=seed)
    for i, batch in enumerate([batches] if isinstance(batches, np.ndarray) else batches):
        shape = np.shape(batch)
        if len(shape) < 2:
            raise ValueError(
                f"fit_stats: batch {i} has shape {shape}; batches must be [..., C] with at "
                "least two axes (features on the last). For N values of one feature, reshape "
                "to [N, 1] (x[:, None]); for one sample of C features, to [1, C]"
            )
        stats.update(batch)
    if stats.n_features is None:
        raise ValueError("no batches to fit on")
    return Standardizer.from_stats(stats, method)
