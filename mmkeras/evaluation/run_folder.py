"""What a finished run folder must hold to be evaluated (checked before TensorFlow loads)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


class EvaluationError(ValueError):
    """A run folder, split or baseline that cannot be evaluated; the message says how to fix it."""


def read_run(run_dir: Path, need_model: bool = True) -> tuple[dict, dict]:
    """``config.yaml`` and ``dataset.json`` of ``run_dir``; also requires ``model.keras``."""
    if not run_dir.is_dir():
        raise EvaluationError(f"run folder {run_dir} does not exist (pass the folder written by "
                              "python -m mmkeras.train --output DIR)")
    needed = ["config.yaml", "dataset.json"] + (["model.keras"] if need_model else [])
    missing = [f for f in needed if not (run_dir / f).is_file()]
    if missing:
        raise EvaluationError(
            f"{run_dir} is not a finished run folder: missing {', '.join(missing)} "
            "(pass the folder written by python -m mmkeras.train --output DIR)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    card = json.loads((run_dir / "dataset.json").read_text())
    return cfg, card
