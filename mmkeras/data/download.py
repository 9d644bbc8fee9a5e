"""Find a dataset locally (``MMKERAS_DATA_DIR``) or download it with checksum verification.

Loaders first look in ``$MMKERAS_DATA_DIR/<subdir>``; users without a local copy get the upstream
files downloaded into ``$MMKERAS_CACHE`` (default ``~/.cache/mmkeras``) and verified by sha256
before use. Tests here always use local copies.

Example:
    >>> digest = folder_digest("fsdd/recordings", "*.wav")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm


def cache_root() -> Path:
    """``$MMKERAS_CACHE`` or ``~/.cache/mmkeras``."""
    return Path(os.environ.get("MMKERAS_CACHE") or Path.home() / ".cache" / "mmkeras")


def local_data(subdir: str) -> Path | None:
    """``$MMKERAS_DATA_DIR/<subdir>`` if the variable is set and the folder exists, else None."""
    root = os.environ.get("MMKERAS_DATA_DIR")
    if root and (Path(root) / subdir).is_dir():
        return Path(root) / subdir
    return None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
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


def fetch(url: str, dest: str | Path, sha256: str) -> Path:
    """Download ``url`` to ``dest`` (with a progress bar) unless present; verify its sha256.

    A partial or corrupted download never reaches ``dest``: it is written to a temporary file
    and renamed only after the checksum matches.
    """
    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp,
        urllib.request.urlopen(url, timeout=60) as response,
    ):
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                tmp.write(block)
                bar.update(len(block))
    actual = sha256_file(tmp.name)
    if actual != sha256:
        os.unlink(tmp.name)
        raise ValueError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; the upstream "
            "file changed or the download was corrupted. Retry, or place a verified copy in "
            "MMKERAS_DATA_DIR."
        )
    shutil.move(tmp.name, dest)
    return dest
