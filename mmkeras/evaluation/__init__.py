"""Evaluation of a finished run: metrics, calibration, modality contribution and robustness.

:func:`evaluate_run` writes ``evaluation.json`` and its figures into the run folder;
``python -m mmkeras.evaluate --run DIR`` is its command line.
"""

from mmkeras.evaluation.report import evaluate_run

__all__ = ["evaluate_run"]
