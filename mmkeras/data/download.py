"""Find a dataset locally (``MMKERAS_DATA_DIR``) or download it with checksum verification.

Loaders read ``$MMKERAS_DATA_DIR/<subdir>`` when the variable is set (a missing folder is then an
error, never a download); users without a local copy (variable unset) get the upstream
files downloaded (:func:`download`) into ``$MMKERAS_CACHE`` (default ``~/.cache/mmkeras``) and
verified by sha256 (:func:`sha256_file`) or content digest (:func:`folder_digest`) before use.
Tests here always use local copies.

Example:
    digest = folder_digest("fsdd/recordings", "*.wav")
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from tqdm import tqdm

from mmkeras import paths
from mmkeras.data import fs


def cache_root() -> Path:
    """``$MMKERAS_CACHE`` or ``~/.cache/mmkeras`` (absolute, created if missing)."""
    return paths.cache_dir()


def local_data(subdir: str) -> Path | None:
    """``$MMKERAS_DATA_DIR/<subdir>``, or None when the variable is unset (then download).

    Raises:
        EnvPathError: naming the variable, when it is set but it or ``<subdir>`` is not a
            folder: a set variable never falls back to downloading.
    """
    root = paths.data_dir()
    if root is None:
        return None
    if not (root / subdir).is_dir():
        raise paths.EnvPathError(
            f"MMKERAS_DATA_DIR={root} has no {subdir}/ folder: put the dataset there (see the "
            "dataset module's docstring for the layout), or unset MMKERAS_DATA_DIR to download it"
        )
    return root / subdir


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (a local path or a URL, see :mod:`mmkeras.data.fs`)."""
    digest = hashlib.sha256()
    with fs.open_file(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | Path, pattern: str = "*") -> str:
    """sha256 over the sorted relative paths and contents of the files matching ``pattern``.

    Identifies a dataset's content independently of how it was packed (zip, tar, git checkout).
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob(pattern) if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def download(url: str, dest: str | Path) -> Path:
    """Stream ``url`` into ``dest`` with a progress bar; a failed download leaves no ``dest``.

    Callers verify the content (sha256 or :func:`folder_digest`) before using it.

    Raises:
        ConnectionError: naming the URL and how to proceed without network access.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm.wrapattr(response, "read", total=total, desc=dest.name) as src:
                shutil.copyfileobj(src, out, 1 << 20)
    except OSError as err:  # URLError, timeouts and resets are OSErrors
        partial.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url}: {err}. Without network access, put a local copy of the "
            "dataset under $MMKERAS_DATA_DIR (see the dataset module's docstring for the layout)."
        ) from err
    partial.replace(dest)
    return dest
