"""Figures saved next to the metrics: learning curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_history(history: dict[str, list[float]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and validation side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(np.arange(1, len(history[prefix + key]) + 1), history[prefix + key],
                        style, label=(prefix or "train_").rstrip("_"))
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: str | Path) -> Path:
    """Confusion matrix with counts; rows are true classes."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(class_names), 1 + 0.8 * len(class_names)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
