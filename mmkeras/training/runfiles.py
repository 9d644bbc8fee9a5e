"""Run folders: atomic file writes, the run's stage in ``state.json``, refusals and run facts.

Every run file is written under a temporary name in its own folder and renamed over the final
name (``os.replace``), so a killed run never leaves a half-written file that a resume would read.
``state.json`` records the stage a run has reached (``training`` -> ``trained`` -> ``evaluated``
-> ``done``, or ``failed``) and the config it was started with; :func:`open_run_dir` refuses a
folder whose config differs, a finished or failed folder (unless ``overwrite``), and a non-empty
folder that is no run folder.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_json(folder / "a.json", {"x": 1})
    >>> sorted(p.name for p in folder.iterdir())
    ['a.json']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
RUN_INFO_FILE = "run_info.json"
STAGES = ("training", "trained", "evaluated", "done")
FAILED = "failed"
# config fields that change neither the model nor its results: a resume may differ in them
IGNORED_FIELDS = ("verbose", "output", "runs_dir", "strict")
_LOCKS: dict[str, int] = {}  # run folders this process holds (an flock on the folder itself)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message is one line saying what to do."""


def _tmp_name(path: Path) -> Path:
    """A unique hidden name beside ``path`` keeping its suffixes (``.keras``, ``.weights.h5``)."""
    return path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (after a rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``.

    For files written by libraries (``model.save``, ``np.savez``, ``savefig``). On an error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2))


def _lock(path: Path) -> None:
    """Hold an exclusive ``flock`` on the folder ``path`` until :func:`release_run_dir`.

    The kernel drops the lock when the process dies, even by SIGKILL, so a crashed run never
    leaves a stale lock; a second process that wants the folder meanwhile is refused.
    """
    key = str(path.resolve())
    if key in _LOCKS:  # this process holds it already
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(f"run folder {path} is in use by another running process: wait "
                             "for it to end (then run the same command again to resume), or "
                             "choose another --output") from None
    _LOCKS[key] = fd


def release_run_dir(path: str | Path) -> None:
    """Release the lock :func:`open_run_dir` took on ``path`` (nothing if it holds none)."""
    fd = _LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def empty_folder(path: Path) -> None:
    """Delete everything inside the folder ``path`` (the folder and its lock stay)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def remove_temps(folder: Path) -> None:
    """Delete temporary files a killed run left in ``folder``."""
    for stale in folder.glob(".tmp-*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>``, or ``...-2``, ``-3``... if that exists.

    ``os.mkdir`` is exclusive, so two runs started in the same second get two folders.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise RunFolderError(f"no free run folder named {base}-N under {runs_dir}: clean it up")


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """``state.json`` of ``run_dir``, or ``None`` when there is none."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise RunFolderError(f"{path} is not valid JSON: delete the run folder or use "
                             "--overwrite") from None


def write_state(run_dir: Path, stage: str, config: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    """Record that the run reached ``stage`` (atomically); returns the new state."""
    state = read_state(run_dir) or {"events": []}
    state["stage"] = stage
    if config is not None:
        state["config"] = config
    state.update(extra)
    state["events"].append({"stage": stage, "time": time.time(), "pid": os.getpid()})
    write_json(Path(run_dir) / STATE_FILE, state)
    return state


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields that decide a run's results, as plain JSON data."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in IGNORED_FIELDS}))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["epochs: 3 -> 5", ...]`` for every (nested) field that differs."""
    a, b = _flat(comparable(old)), _flat(comparable(new))
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]


def open_run_dir(output: str | None, runs_dir: str, name: str, config: dict[str, Any],
                 overwrite: bool = False, writer: bool = True) -> tuple[Path, dict | None]:
    """The run folder to use and its state (``None`` for a fresh run).

    ``output`` unset: a new folder under ``runs_dir``. ``output`` set: a missing or empty
    folder starts a fresh run; a folder stopped mid-way resumes if its config is the same.
    ``overwrite`` clears a previous run folder first. Only a ``writer`` (the chief) creates or
    clears folders. Raises :class:`RunFolderError` when the folder cannot be used.
    """
    if not output:
        if not writer:
            raise RunFolderError("multi-worker runs need --output (the same folder on every "
                                 "worker)")
        return new_run_dir(runs_dir, name), None
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--output {path} is a file, not a folder: choose another --output")
    if writer:  # one process at a time decides about (and writes) the folder
        path.mkdir(parents=True, exist_ok=True)
        _lock(path)
    try:
        return _open_locked(path, config, overwrite, writer)
    except BaseException:
        release_run_dir(path)
        raise


def _open_locked(path: Path, config: dict[str, Any], overwrite: bool,
                 writer: bool) -> tuple[Path, dict | None]:
    state = read_state(path) if path.is_dir() else None
    # temporary files (a run killed while writing its first file) do not make a run folder
    entries = [p for p in path.iterdir() if not p.name.startswith(".tmp-")] \
        if path.is_dir() else []
    if state is None and entries:
        if not (overwrite and (path / "config.yaml").is_file()):
            raise RunFolderError(f"--output {path} is not empty and holds no mmkeras run "
                                 f"({STATE_FILE} missing): choose another --output")
    elif state is not None and not overwrite:
        stage = state.get("stage")
        if stage == "done":
            raise RunFolderError(f"run folder {path} holds a finished run: use --overwrite to "
                                 "run it again, or choose another --output")
        if stage == FAILED:
            raise RunFolderError(f"run folder {path} holds a failed run ({state.get('error')}):"
                                 " use --overwrite to run it again, or choose another --output")
        differences = config_differences(state.get("config", {}), config)
        if differences:
            raise RunFolderError(f"run folder {path} was started with another config "
                                 f"({'; '.join(differences)}): resume it with the same config, "
                                 "use --overwrite to start again, or choose another --output")
        return path, state
    if writer:
        if overwrite:
            empty_folder(path)
        path.mkdir(parents=True, exist_ok=True)
    return path, None


def _git_commit() -> str | None:
    """The commit of the repository holding mmkeras, or ``None`` (not a checkout, no git)."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "numpy", "mmkeras"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def record_run_info(run_dir: Path, config: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """Write ``run_info.json``: resolved config, package versions, git commit, and one entry per
    invocation (command line, time, host, pid, ``facts``); a resume appends an invocation."""
    path = Path(run_dir) / RUN_INFO_FILE
    info = json.loads(path.read_text()) if path.is_file() else {"invocations": []}
    info.update(config=config, versions=package_versions(), git_commit=_git_commit())
    info["invocations"].append({"argv": list(sys.argv), "time": time.time(),
                                "host": platform.node(), "pid": os.getpid(), **facts})
    write_json(path, info)
    return info
