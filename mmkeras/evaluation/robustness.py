"""Accuracy under growing input corruption, one modality at a time, and its summaries.

Corruptions by modality kind, level ``k = 1..L`` of ``L`` (level 0 is the clean input):

- ``audio``, ``timeseries``, ``tabular``: additive Gaussian noise at a signal-to-noise ratio
  falling in equal dB steps from 20 dB to -5 dB (20, 13.75, 7.5, 1.25, -5 dB for ``L = 5``).
  The signal power is measured per example and per channel as the power of the mean-removed
  signal (its variance over time, or over features for tabular rows), so a constant offset such
  as gravity or the ambient temperature does not inflate the noise: noise variance =
  power / 10^(SNR/10). Constant channels get no noise.
- ``image``: occlusion by one square patch whose side is the fraction ``k / L`` of the shorter
  image side (level ``L`` covers the whole image), at a uniformly random position inside the
  image, filled with the example's per-channel mean.
- ``text``: token dropout, the fraction ``k / L`` of the whitespace-separated words removed
  from the raw string at random (rounded to whole words).

Randomness comes from ``numpy.random.default_rng([seed, modality index, level])``, so a curve is
reproducible and does not depend on which other modalities were corrupted before.

Summaries follow MultiBench (Liang et al., 2021, "MultiBench: Multiscale Benchmarks for
Multimodal Representation Learning", NeurIPS Datasets and Benchmarks; pliang279/MultiBench
``eval_scripts/robustness.py``):

- **relative robustness**: the area under the accuracy-vs-level curve with the level axis
  scaled to [0, 1] (trapezoids; MultiBench uses 11 levels 0.1 apart). It is in [0, 1] and
  equals the clean accuracy for a model unaffected by the corruption. MultiBench further
  min-max normalises it across the methods it compares; with one model there is nothing to
  normalise against, so the raw area is reported.
- **effective robustness**: the curve ``f`` against a baseline curve ``b`` shifted to start at
  the same clean accuracy, ``sum_k (f_k - (b_k + f_0 - b_0))`` (MultiBench's baseline is late
  fusion). The default baseline is the chance model, whose curve is flat, so the value is the
  summed accuracy lost to corruption, ``sum_k (f_k - f_0)`` (0 is best, negative is worse).
"""

from __future__ import annotations

import keras
import numpy as np

from mmkeras.data.dataset import ModalitySpec
from mmkeras.evaluation.predict import predict

NOISE_KINDS = ("audio", "timeseries", "tabular")
SNR_FIRST_DB, SNR_LAST_DB = 20.0, -5.0
CORRUPTIONS = {"audio": "gaussian_noise", "timeseries": "gaussian_noise",
               "tabular": "gaussian_noise", "image": "occlusion", "text": "token_dropout"}
UNITS = {"gaussian_noise": "SNR (dB)", "occlusion": "patch side (fraction of image side)",
         "token_dropout": "words dropped (fraction)"}


def severities(kind: str, levels: int) -> list[float]:
    """Severity of levels ``1..levels``: SNR in dB for noise, a fraction for occlusion/dropout.

    Example:
        >>> severities("audio", 5)
        [20.0, 13.75, 7.5, 1.25, -5.0]
        >>> severities("image", 4)
        [0.25, 0.5, 0.75, 1.0]
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if kind in NOISE_KINDS:
        if levels == 1:
            return [SNR_LAST_DB]
        return [float(v) for v in np.linspace(SNR_FIRST_DB, SNR_LAST_DB, levels)]
    return [k / levels for k in range(1, levels + 1)]


def gaussian_noise(values: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``values`` ``[N, T]`` or ``[N, T, C]`` plus noise at ``snr_db`` per example and channel."""
    x = np.asarray(values, dtype=np.float64)
    series = x.reshape(len(x), x.shape[1], -1)
    power = series.var(axis=1, keepdims=True)
    noise = rng.standard_normal(series.shape) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (series + noise).reshape(x.shape).astype(np.asarray(values).dtype)


def occlusion(images: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``images`` ``[N, H, W, C]`` with a square of side ``fraction * min(H, W)`` set to the mean.

    Example:
        >>> img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
        >>> out = occlusion(img, 1.0, np.random.default_rng(0))
        >>> out.ravel().tolist() == [7.5] * 16
        True
    """
    out = np.array(images, copy=True)
    n, height, width = out.shape[:3]
    side = max(1, round(fraction * min(height, width))) if fraction > 0 else 0
    if side == 0:
        return out
    means = out.reshape(n, height * width, -1).astype(np.float64).mean(axis=1)
    if np.issubdtype(out.dtype, np.integer):
        means = np.round(means)
    tops = rng.integers(0, height - side + 1, size=n)
    lefts = rng.integers(0, width - side + 1, size=n)
    for i in range(n):
        out[i, tops[i]:tops[i] + side, lefts[i]:lefts[i] + side] = means[i].astype(out.dtype)
    return out


def token_dropout(texts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Each string with ``round(fraction * words)`` of its words removed at random.

    Example:
        >>> token_dropout(np.array(["a b c d"], dtype=object), 1.0, np.random.default_rng(0))
        array([''], dtype=object)
    """
    out = []
    for text in texts:
        words = (text.decode() if isinstance(text, bytes) else str(text)).split()
        count = round(fraction * len(words))
        drop = set(rng.choice(len(words), size=count, replace=False).tolist())
        out.append(" ".join(w for i, w in enumerate(words) if i not in drop))
    return np.array(out, dtype=object)


def corrupt(spec: ModalitySpec, values: np.ndarray, severity: float,
            rng: np.random.Generator) -> np.ndarray:
    """``values`` of modality ``spec`` corrupted at ``severity`` (see :func:`severities`)."""
    corruption = CORRUPTIONS[spec.kind]
    if corruption == "gaussian_noise":
        return gaussian_noise(values, severity, rng)
    if corruption == "occlusion":
        return occlusion(values, severity, rng)
    return token_dropout(values, severity, rng)


def relative_robustness(accuracies: list[float]) -> float:
    """Area under ``accuracies`` (clean first) over the level axis scaled to [0, 1].

    Example:
        >>> relative_robustness([1.0, 0.5, 0.0])
        0.5
    """
    f = np.asarray(accuracies, dtype=np.float64)
    return float(np.sum((f[1:] + f[:-1]) / 2) / (len(f) - 1))


def effective_robustness(accuracies: list[float], baseline: list[float] | None = None) -> float:
    """MultiBench's effective robustness against ``baseline`` (default: a flat chance curve).

    Example:
        >>> effective_robustness([0.9, 0.8, 0.6], baseline=[0.8, 0.6, 0.4])
        0.2
    """
    f = np.asarray(accuracies, dtype=np.float64)
    b = np.full_like(f, f[0]) if baseline is None else np.asarray(baseline, dtype=np.float64)
    if b.shape != f.shape:
        raise ValueError(f"baseline has {len(b)} points, the curve {len(f)}: evaluate both "
                         "with the same --levels")
    return round(float(np.sum(f - (b + f[0] - b[0]))), 12)


def robustness_curves(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    y_true: np.ndarray,
    specs: dict[str, ModalitySpec],
    clean_accuracy: float,
    levels: int = 5,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, dict]:
    """Per modality: corruption, severities, accuracy at clean + each level, and the summaries.

    Only that modality is corrupted; the others stay clean and every modality stays present.

    Example:
        curves = robustness_curves(model, inputs, labels, dataset.modalities, 0.93)
        curves["audio"]["accuracy"]   # levels + 1 values, clean first
    """
    curves = {}
    for index, (name, values) in enumerate(inputs.items()):
        spec = specs[name]
        accuracy = [clean_accuracy]
        for level, severity in enumerate(severities(spec.kind, levels), start=1):
            rng = np.random.default_rng([seed, index, level])
            corrupted = {**inputs, name: corrupt(spec, values, severity, rng)}
            probabilities = predict(model, corrupted, batch_size=batch_size)["probabilities"]
            accuracy.append(float(np.mean(probabilities.argmax(-1) == y_true)))
        corruption = CORRUPTIONS[spec.kind]
        curves[name] = {
            "corruption": corruption,
            "severity_unit": UNITS[corruption],
            "severities": severities(spec.kind, levels),
            "accuracy": accuracy,
            "relative_robustness": relative_robustness(accuracy),
            "retained": relative_robustness(accuracy) / clean_accuracy if clean_accuracy else None,
        }
    return curves
