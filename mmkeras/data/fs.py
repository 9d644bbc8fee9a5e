"""Local paths and URLs behind one small file API, for data that lives in a bucket.

A path with a scheme (``gs://bucket/x.csv``, ``s3://``, ``hdfs://``, ``file:///abs``,
``ram://``) goes through TensorFlow's file systems (``tf.io.gfile``: Google Cloud Storage and
HDFS are built in, credentials as TensorFlow finds them); a plain path uses the operating
system as before. So the manifest reader, the Beam preparation and the prepared-dataset reader
work unchanged on a runner whose workers share no disk (Dataflow). TensorFlow is imported only
when a URL is used. File-system errors on URLs surface as ``OSError`` (``FileNotFoundError``
for a missing object), like local ones.

Example:
    >>> join("gs://bucket/data", "run1/accel.csv")
    'gs://bucket/data/run1/accel.csv'
    >>> parent("gs://bucket/data/manifest.csv")
    'gs://bucket/data'
"""

from __future__ import annotations

import contextlib
import errno
import glob as _glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` paths (handled by TensorFlow's file systems)."""
    return "://" in os.fspath(path)


def clean(path: str | os.PathLike) -> str:
    """The path as a string: a local one normalised as ``pathlib`` does (``./a//b`` -> ``a/b``),
    a URL as it is."""
    path = os.fspath(path)
    return path if is_url(path) else str(Path(path))


def join(base: str | os.PathLike, name: str | os.PathLike) -> str:
    """``name`` relative to the folder ``base``; an absolute path or a URL stays as it is."""
    base, name = os.fspath(base), os.fspath(name)
    if is_url(name) or os.path.isabs(name):
        return name
    if is_url(base):
        return f"{base.rstrip('/')}/{name}"
    return os.path.join(base, name)


def abspath(path: str | os.PathLike) -> str:
    """An absolute local path; a URL stays as it is."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def parent(path: str | os.PathLike) -> str:
    """The absolute folder holding ``path``."""
    path = abspath(path)
    return path.rstrip("/").rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """TensorFlow's file-system errors as the matching ``OSError``."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError as err:
        raise FileNotFoundError(errno.ENOENT, err.message or "No such file or directory",
                                path) from err
    except tf.errors.PermissionDeniedError as err:
        raise PermissionError(errno.EACCES, err.message or "Permission denied", path) from err
    except tf.errors.OpError as err:
        raise OSError(errno.EIO, err.message or type(err).__name__, path) from err


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def isfile(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isfile(path)
    gfile = _gfile()
    with _os_errors(path):
        return gfile.exists(path) and not gfile.isdir(path)


def isdir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isdir(path)
    with _os_errors(path):
        return _gfile().isdir(path)


def listdir(path: str | os.PathLike) -> list[str]:
    """Names in the folder ``path`` (sub-folders without a trailing slash)."""
    path = os.fspath(path)
    if not is_url(path):
        return os.listdir(path)
    with _os_errors(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]


def glob(pattern: str) -> list[str]:
    if not is_url(pattern):
        return _glob.glob(pattern)
    with _os_errors(pattern):
        return _gfile().glob(pattern)


def stat(path: str | os.PathLike) -> tuple[int, int]:
    """``(size in bytes, modification time in ns)``; the time is 0 where the store has none."""
    path = os.fspath(path)
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    with _os_errors(path):
        st = _gfile().stat(path)
    return int(st.length), int(st.mtime_nsec)


def open_file(path: str | os.PathLike, mode: str = "r") -> IO:
    """A file object; text modes are UTF-8 without newline translation (as ``csv`` wants).

    On a URL, errors while reading or writing are TensorFlow's (use :func:`read_bytes` to get
    ``OSError``); opening a missing object for reading raises ``FileNotFoundError``.
    """
    path = os.fspath(path)
    if not is_url(path):
        if "b" in mode:
            return open(path, mode)
        return open(path, mode, encoding="utf-8", newline="")
    if "r" in mode and not isfile(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return _gfile().GFile(path, mode)


def read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read()
    with _os_errors(path), _gfile().GFile(path, "rb") as f:
        return f.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole file under a temporary name, then rename it into place."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    if not is_url(path):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
        return
    gfile = _gfile()
    with _os_errors(path):
        with gfile.GFile(tmp, "w") as f:
            f.write(text)
        gfile.rename(tmp, path, overwrite=True)


def makedirs(path: str | os.PathLike) -> None:
    path = os.fspath(path)
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    with _os_errors(path):
        _gfile().makedirs(path)


def remove(path: str | os.PathLike) -> None:
    path = os.fspath(path)
    if not is_url(path):
        os.remove(path)
        return
    with _os_errors(path):
        _gfile().remove(path)


def rmtree(path: str | os.PathLike) -> None:
    """Remove a folder and everything in it; nothing happens if it does not exist."""
    path = os.fspath(path)
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError), _os_errors(path):
        _gfile().rmtree(path)


def utf8_text(raw: bytes, name: str, fix: str, error: type[ValueError] = ValueError) -> str:
    """``raw`` decoded as UTF-8; else ``error`` naming ``name``, the line and the byte, + ``fix``.

    Example:
        >>> utf8_text(b"a: caf\\xe9", "c.yaml", "save it as UTF-8")
        Traceback (most recent call last):
        ...
        ValueError: c.yaml:1: not UTF-8 text (byte 0xe9): save it as UTF-8
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(f"{name}:{line}: not UTF-8 text (byte {raw[err.start]:#04x}): {fix}"
                    ) from None

