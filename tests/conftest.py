"""Shared fixtures: the real-data folder and a tiny embedded machine dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mmkeras  # noqa: F401  (resolves MMKERAS_DATA_DIR / MMKERAS_CACHE to absolute paths)

TINY_MACHINE = {"n_machines": 8, "runs_per_machine": 2, "duration_s": 14.0, "progress": False}


def tensorboard_scalars(log_dir: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """``(split, tag) -> [(step, value), ...]`` from the event files under ``log_dir/<split>``."""
    import tensorflow as tf

    seen: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for split in ("train", "validation"):
        for file in sorted((log_dir / split).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(file)):
                for value in event.summary.value:
                    seen.setdefault((split, value.tag), []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return seen


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$MMKERAS_DATA_DIR`` (absolute); fails (never skips) when it is unset or missing."""
    value = os.environ.get("MMKERAS_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail(
            f"MMKERAS_DATA_DIR={value!r} is not a folder: set it to the shared real data "
            "(e.g. MMKERAS_DATA_DIR=../shared/data) before running the tests"
        )
    return Path(value).absolute()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session cache so tests never touch the user's ``~/.cache/mmkeras``."""
    path = tmp_path_factory.mktemp("mmkeras-cache")
    os.environ["MMKERAS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_machine(cache_dir: Path):
    """The embedded machine dataset at a tiny size (8 machines, 14 s runs)."""
    from data_pipelines.machine import load

    return load(cache_dir=cache_dir, **TINY_MACHINE)
