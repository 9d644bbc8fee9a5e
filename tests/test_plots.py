"""The plotting functions build Figures without touching pyplot or the global backend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from mmkeras.training.plots import plot_confusion, plot_history
from tests.notebook_checks import axes_without_data

HISTORY = {"loss": [1.2, 0.8, 0.6], "accuracy": [0.4, 0.6, 0.7],
           "val_loss": [1.3, 0.9, 0.8], "val_accuracy": [0.35, 0.55, 0.6]}


def test_import_keeps_the_backend_and_pyplot_untouched():
    code = ("import sys, matplotlib\n"
            "before = matplotlib.get_backend()\n"
            "import mmkeras.training.plots as p\n"
            "p.plot_history({'loss': [1.0, 0.5]})\n"
            "print(before, matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    env_backend = "svg"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MPLBACKEND": env_backend, "PATH": ""})
    assert out.stdout.split() == [env_backend, env_backend, "False"]


def test_plot_history_returns_a_figure_with_data_and_saves_it(tmp_path):
    fig = plot_history(HISTORY, tmp_path / "history.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 and axes_without_data(fig) == []
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), HISTORY["val_loss"])
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    with Image.open(tmp_path / "history.png") as image:
        assert image.format == "PNG" and image.width > 300


def test_plot_history_without_validation_and_without_path():
    fig = plot_history({"loss": [1.0, 0.7]})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1


def test_plot_confusion_returns_a_figure_with_the_counts(tmp_path):
    matrix = [[5, 1, 0], [0, 4, 2], [1, 0, 6]]
    fig = plot_confusion(matrix, ["a", "b", "c"], tmp_path / "cm.png")
    assert isinstance(fig, Figure) and axes_without_data(fig) == []
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), matrix)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(
        str(v) for row in matrix for v in row)
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_axes_without_data_flags_empty_axes():
    fig = Figure()
    a, b, c = fig.subplots(1, 3)
    a.plot([0, 1], [0, 1])
    b.plot([], [])
    c.text(0.5, 0.5, "only text")
    assert len(axes_without_data(fig)) == 2
