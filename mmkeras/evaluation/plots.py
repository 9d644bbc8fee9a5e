"""Evaluation figures as ``matplotlib.figure.Figure`` objects (no pyplot state).

Like :mod:`mmkeras.training.plots`, each function builds a ``Figure``, saves it as PNG when given
a path and returns it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmkeras.training.plots import DPI


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=DPI, format="png")
    return fig


def plot_reliability(calibration: dict, path: str | Path | None = None) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and bin counts.

    ``calibration`` is :func:`mmkeras.evaluation.metrics.expected_calibration_error`'s result.
    """
    bins = calibration["bins"]
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    filled = [i for i, b in enumerate(bins) if b["count"]]
    fig = Figure(figsize=(5.0, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.bar(lower[filled], [bins[i]["accuracy"] for i in filled], width[filled], align="edge",
            edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy in bin")
    top.plot([bins[i]["confidence"] for i in filled], [bins[i]["accuracy"] for i in filled],
             "o", color="tab:red", ms=4, label="mean confidence in bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction correct)")
    top.set_title(f"reliability diagram (top-label ECE {calibration['ece']:.3f}, "
                  f"{len(bins)} bins)")
    top.legend(loc="upper left")
    bottom.bar(lower, [b["count"] for b in bins], width, align="edge", color="tab:gray",
               edgecolor="black", label="predictions")
    bottom.set_xlabel("confidence (highest predicted probability)")
    bottom.set_ylabel("examples")
    bottom.legend(loc="upper left")
    return _save(fig, path)


def plot_modality_weights(table: dict[str, dict[str, float | None]],
                          path: str | Path | None = None) -> Figure:
    """Heatmap of the mean fusion weight per modality (columns) for each true class (rows)."""
    classes = list(table)
    modalities = list(next(iter(table.values())))
    values = np.array([[np.nan if table[c][m] is None else table[c][m] for m in modalities]
                       for c in classes], dtype=float)
    fig = Figure(figsize=(2.4 + 1.1 * len(modalities), 1.4 + 0.55 * len(classes)),
                 layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(modalities)), modalities, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("modality")
    ax.set_ylabel("true class")
    ax.set_title("mean fusion weight per true class")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                color="black" if not np.isnan(v) and v > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="mean weight (fraction, rows sum to 1)")
    return _save(fig, path)


def plot_robustness(name: str, curve: dict, chance: float,
                    path: str | Path | None = None) -> Figure:
    """Accuracy against corruption level for one modality, with the clean and chance lines."""
    accuracy = curve["accuracy"]
    levels = np.arange(len(accuracy))
    fmt = "{:g} dB" if curve["corruption"] == "gaussian_noise" else "{:.2f}"
    labels = ["clean"] + [fmt.format(s) for s in curve["severities"]]
    fig = Figure(figsize=(5.4, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(levels, accuracy, "o-", label=f"{name} corrupted, others clean")
    ax.axhline(accuracy[0], color="tab:green", ls="--", lw=1, label="clean accuracy")
    ax.axhline(chance, color="tab:gray", ls=":", lw=1, label="chance (1 / classes)")
    ax.set_xticks(levels, labels)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{curve['corruption'].replace('_', ' ')}: {curve['severity_unit']}")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"{name}: relative robustness {curve['relative_robustness']:.3f}")
    ax.legend(loc="best")
    return _save(fig, path)
