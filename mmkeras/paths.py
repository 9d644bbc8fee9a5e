"""Folders named by environment variables, resolved once when :mod:`mmkeras` is imported.

``MMKERAS_DATA_DIR`` (local copies of the real datasets) and ``MMKERAS_CACHE`` (downloads and
generated data; default ``~/.cache/mmkeras``) are made absolute in ``os.environ`` at import, so
a later change of directory, or a subprocess started elsewhere, sees the same folders. A set
``MMKERAS_DATA_DIR`` that is not a folder is an :class:`EnvPathError` naming the variable, never
a reason to download.

Example:
    >>> import os
    >>> os.path.isabs(os.environ.get("MMKERAS_CACHE", "/"))
    True
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR, CACHE = "MMKERAS_DATA_DIR", "MMKERAS_CACHE"
_given: dict[str, str] = {}  # the values as set by the user, before resolution


class EnvPathError(ValueError):
    """An environment variable names a folder that does not exist or cannot be created."""


def resolve_env() -> None:
    """Rewrite ``MMKERAS_DATA_DIR`` and ``MMKERAS_CACHE`` in ``os.environ`` as absolute paths."""
    for var in (DATA_DIR, CACHE):
        value = os.environ.get(var)
        if value:
            _given.setdefault(var, value)
            os.environ[var] = str(Path(value).expanduser().absolute())


def _describe(var: str, path: Path) -> str:
    given = _given.get(var)
    return f"{var}={given!r} (resolved to {path})" if given and given != str(path) else \
        f"{var}={str(path)!r}"


def data_dir() -> Path | None:
    """``$MMKERAS_DATA_DIR`` as an absolute folder, or None when unset.

    Raises:
        EnvPathError: naming the variable, when it is set but is not a folder.
    """
    value = os.environ.get(DATA_DIR)
    if not value:
        return None
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise EnvPathError(
            f"{_describe(DATA_DIR, path)} is not a folder: point it at the folder holding the "
            "datasets (fsdd/, mnist/, sensors/...), or unset it to download them into the cache"
        )
    return path


def cache_dir() -> Path:
    """``$MMKERAS_CACHE`` or ``~/.cache/mmkeras``, created if missing.

    Raises:
        EnvPathError: naming the variable, when the folder cannot be created.
    """
    value = os.environ.get(CACHE)
    path = Path(value).expanduser().absolute() if value else Path.home() / ".cache" / "mmkeras"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        name = _describe(CACHE, path) if value else f"the default cache {path}"
        raise EnvPathError(f"{name} cannot be used as a folder ({err.strerror}): set "
                           f"{CACHE} to a writable folder") from None
    return path


def check_env() -> None:
    """Fail early (:class:`EnvPathError`) if a folder variable names an unusable folder."""
    data_dir()
    cache_dir()
