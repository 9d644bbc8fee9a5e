"""Missing values inside a stream, and whole missing modalities.

Within a stream ``[T, C]`` a value is missing when its time step is masked out **or** it is
NaN; :func:`impute` fills it without looking at statistics of the data being filled (the
``mean`` strategy takes the *training* mean).

Whole missing modality (model-side convention, :func:`presence`): each modality ``m`` gets a
float input ``{m}_present`` of shape ``[1]``: ``1.0`` when the modality is there, ``0.0`` when
it is absent, in which case its values are all zeros (of the usual shape). Zeros are the
training mean after z-scoring, and the model can gate/mask the modality with the flag, e.g.
``features * present``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from mmkeras.data.standardize import RunningStats, Standardizer

Strategy = Literal["mean", "ffill", "linear", "zero"]
STRATEGIES: tuple[str, ...] = ("mean", "ffill", "linear", "zero")
PRESENT, ABSENT = 1.0, 0.0

FillValue = float | Sequence[float] | np.ndarray | Standardizer | RunningStats


def impute(
    values: np.ndarray,
    mask: np.ndarray | None = None,
    strategy: Strategy = "mean",
    fill_value: FillValue | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing entries of ``values [T, C]``; return ``(filled float64 [T, C], observed)``.

    ``mask`` is ``[T]`` (or ``[T, C]``) bool with **True = observed**; NaN entries count as
    missing too. The returned ``observed`` is the ``[T, C]`` bool mask of entries that were
    observed (use ``observed.all(-1)`` / ``.any(-1)`` for a per-step mask). Observed values
    are returned unchanged.

    ``fill_value`` is the *training* mean per channel: an array/scalar, a fitted
    ``RunningStats`` (its ``mean``), or a z-score ``Standardizer`` (its ``center``).

    Strategies:
        * ``"mean"``: missing -> ``fill_value`` (required; never the filled data's mean).
        * ``"ffill"``: carry the last observed value forward; entries before the first
          observation get ``fill_value``, or 0 if it is None.
        * ``"linear"``: interpolate interior gaps linearly in the step index; leading and
          trailing gaps hold the nearest observed value; a channel with no observation gets
          ``fill_value``, or 0 if it is None.
        * ``"zero"``: missing -> 0 (``fill_value`` ignored).

    Example:
        >>> x = np.array([[1.0], [np.nan], [np.nan], [4.0], [np.nan]])
        >>> impute(x, strategy="linear")[0].ravel().tolist()
        [1.0, 2.0, 3.0, 4.0, 4.0]
        >>> impute(x, strategy="mean", fill_value=[0.5])[0].ravel().tolist()
        [1.0, 0.5, 0.5, 4.0, 0.5]
    """
    x = np.array(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values must be [T, C], got shape {x.shape}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    observed = ~np.isnan(x)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape not in (x.shape[:1], x.shape):
            raise ValueError(f"mask must be [T] or [T, C] for values {x.shape}, got {m.shape}")
        observed &= m[:, None] if m.ndim == 1 else m
    if strategy == "mean" and fill_value is None:
        raise ValueError("strategy 'mean' needs fill_value = the training mean")
    default = _channel_values(fill_value, x.shape[1])
    if strategy == "zero":
        default = np.zeros(x.shape[1])

    steps = np.arange(x.shape[0])[:, None]
    prev = np.maximum.accumulate(np.where(observed, steps, -1), axis=0)
    if strategy in ("mean", "zero"):
        fill = np.broadcast_to(default, x.shape)
    elif strategy == "ffill":
        fill = np.where(prev >= 0, _take(x, prev), default)
    else:
        n = x.shape[0]
        nxt = np.minimum.accumulate(np.where(observed, steps, n)[::-1], axis=0)[::-1]
        has_prev, has_next = prev >= 0, nxt < n
        v_prev, v_next = _take(x, prev), _take(x, nxt)
        frac = (steps - prev) / np.maximum(nxt - prev, 1)
        fill = np.select(
            [has_prev & has_next, has_prev, has_next],
            [v_prev + frac * (v_next - v_prev), v_prev, v_next],
            default,
        )
    return np.where(observed, x, fill), observed


def _take(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows[t, c], c]`` with out-of-range rows clipped (callers mask those out)."""
    return np.take_along_axis(x, np.clip(rows, 0, x.shape[0] - 1), axis=0)


def _channel_values(fill_value: FillValue | None, n_channels: int) -> np.ndarray:
    if fill_value is None:
        return np.zeros(n_channels)
    if isinstance(fill_value, Standardizer):
        if fill_value.method != "zscore":
            raise ValueError(
                f"a {fill_value.method!r} Standardizer's center is not the mean; "
                "pass a zscore Standardizer, RunningStats or an array"
            )
        fill_value = fill_value.center
    elif isinstance(fill_value, RunningStats):
        fill_value = fill_value.mean
    out = np.broadcast_to(np.asarray(fill_value, dtype=np.float64), (n_channels,))
    if not np.isfinite(out).all():
        raise ValueError("fill_value must be finite")
    return out


def presence(
    values: np.ndarray | None,
    shape: Sequence[int],
    dtype: npt.DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the missing-modality convention to one sample of one modality.

    Returns ``(values, present)`` where ``present`` is a ``[1]`` array holding ``PRESENT``
    (1.0) or ``ABSENT`` (0.0). The modality is absent when ``values`` is None or entirely NaN;
    then ``values`` becomes zeros of ``shape``. Partly-NaN values stay as they are (impute
    them first).

    Example:
        >>> v, p = presence(None, (2, 3))
        >>> v.shape, v.sum(), p.tolist()
        ((2, 3), np.float32(0.0), [0.0])
        >>> presence(np.ones((2, 3)), (2, 3))[1].tolist()
        [1.0]
    """
    shape = tuple(shape)
    if values is None or np.isnan(np.asarray(values, dtype=np.float64)).all():
        return np.zeros(shape, dtype), np.full((1,), ABSENT, dtype)
    out = np.asarray(values, dtype)
    if out.shape != shape:
        raise ValueError(f"expected shape {shape}, got {out.shape}")
    return out, np.full((1,), PRESENT, dtype)
