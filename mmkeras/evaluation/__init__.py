"""Evaluation of a finished run: metrics, calibration, modality contribution and robustness.

:func:`evaluate_run` writes ``evaluation.json`` and its figures into the run folder;
``python -m mmkeras.evaluate --run DIR`` is its command line. Importing this package is cheap:
TensorFlow loads when ``evaluate_run`` is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_run"]


def __getattr__(name: str) -> Any:
    if name == "evaluate_run":
        from mmkeras.evaluation.report import evaluate_run

        return evaluate_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
