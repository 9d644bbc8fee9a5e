"""What a finished run folder must hold to be evaluated (checked before TensorFlow loads)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    cfg = read_run_file(run_dir / "config.yaml", yaml.safe_load, EvaluationError)
    card = read_run_file(run_dir / "dataset.json", json.loads, EvaluationError)
    return cfg, card


def read_run_file(path: Path, parse: Callable[[str], Any], error: type[Exception]) -> dict:
    """A run folder's ``config.yaml`` or ``dataset.json`` as a mapping; a damaged file is
    ``error`` naming it (a run killed while writing it, or an edited file)."""
    try:
        data = parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        problem = f"line {mark.line + 1}: {problem}" if mark else problem
        raise error(f"{path} cannot be read ({problem}): the run folder is damaged; train "
                    "it again (python -m mmkeras.train --output DIR --overwrite)") from None
    if not isinstance(data, dict):
        raise error(f"{path} does not hold a mapping: the run folder is damaged; train it "
                    "again (python -m mmkeras.train --output DIR --overwrite)")
    return data


def load_run_model(path: Path, error: type[Exception]) -> Any:
    """``model.keras`` of a run folder; a truncated or damaged file is ``error`` naming it
    (Keras itself says "File not found" for a file that is not a complete zip)."""
    import zipfile

    from mmkeras.layers import load_model

    if not zipfile.is_zipfile(path):
        raise error(f"{path} is not a complete .keras file (truncated or damaged, e.g. a run "
                    "killed while saving it): train the run again (python -m mmkeras.train "
                    "--output DIR --overwrite)")
    try:
        return load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        problem = " ".join(str(err).split())
        raise error(f"{path} cannot be loaded ({problem}): train the run again "
                    "(python -m mmkeras.train --output DIR --overwrite)") from None
