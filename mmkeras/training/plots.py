"""Learning curves and the confusion matrix as ``matplotlib.figure.Figure`` objects.

The functions never touch pyplot or the global backend: they build a ``Figure``, save it when
given a path (PNG rendered by Agg, whatever backend is active) and return it, so a notebook
shows the returned figure inline and the command line only saves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=DPI)
    return fig


def plot_history(history: dict[str, list[float]], path: str | Path | None = None) -> Figure:
    """Loss and accuracy per epoch, train (solid) and validation (dashed) side by side.

    ``history`` is Keras' ``History.history`` (or ``history.csv`` read as lists); panels whose
    metric is absent are left out. Saved to ``path`` if given.
    """
    keys = [k for k in ("loss", "accuracy") if k in history or f"val_{k}" in history]
    if not keys:
        raise ValueError(f"history has neither loss nor accuracy: {sorted(history)}")
    fig = Figure(figsize=(4.5 * len(keys), 3.2), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        for prefix, style, label in (("", "o-", "train"), ("val_", "s--", "validation")):
            values = history.get(prefix + key)
            if values is not None and len(values):
                ax.plot(np.arange(1, len(values) + 1), values, style, ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key if key == "loss" else f"{key} (fraction correct)")
        ax.set_title(key if key != "loss" else "loss (cross-entropy)")
        ax.legend()
    return _save(fig, path)


def plot_confusion(
    matrix: list[list[int]], class_names: list[str], path: str | Path | None = None
) -> Figure:
    """Confusion matrix with counts; rows are true classes, columns predicted ones."""
    m = np.asarray(matrix)
    n = len(class_names)
    fig = Figure(figsize=(2.2 + 0.9 * n, 1.2 + 0.8 * n), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({int(m.sum())} test windows)")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > m.max() / 2 else "black")
    fig.colorbar(image, ax=ax, label="windows")
    return _save(fig, path)
