"""What every ``python -m mmkeras.<command>`` shares: one-line usage errors and quiet start-up.

Example:
    >>> parser = Parser(prog="python -m mmkeras.example", description="An example.")
    >>> _ = parser.add_argument("--run", required=True)
    >>> parser.parse_args(["--run", "runs/a"]).run
    'runs/a'
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2).

    argparse prints the whole usage first; the one line names the problem and ``--help``.
    ``RawDescriptionHelpFormatter`` keeps hand-laid-out epilogs as written.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse ``type=`` for integers >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# absl writes these C++ start-up lines to stderr while TensorFlow loads, whatever
# TF_CPP_MIN_LOG_LEVEL says (logging is not initialised yet: abseil/abseil-cpp#1718)
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
_ABSL_LINE = re.compile(r"^(?P<level>[IWEF])\d{4} [\d:. ]+\d+ (?P<file>[\w.]+):\d+\] ")
_CUDA_FILES = re.compile(r"^(cuda_\w+|cudart_stub|cpu_feature_guard|port)\.cc$")


def _is_chatter(line: str, previous_dropped: bool) -> bool:
    match = _ABSL_LINE.match(line)
    if match:
        return match["level"] in "IW" or bool(_CUDA_FILES.match(match["file"]))
    return line.startswith(_ABSL_BANNER) or (
        previous_dropped and line.startswith("To enable the following instructions"))


def drop_chatter(lines: list[str]) -> list[str]:
    """``lines`` without TensorFlow's C++ start-up chatter (other errors are kept).

    Example:
        >>> drop_chatter(["I0000 00:00:1.2 7 port.cc:153] oneDNN custom operations are on.",
        ...               "error: bad file"])
        ['error: bad file']
    """
    kept, dropped = [], False
    for line in lines:
        dropped = _is_chatter(line, dropped)
        if not dropped:
            kept.append(line)
    return kept


@contextlib.contextmanager
def native_stderr(lines: list[str]) -> Iterator[None]:
    """Collect everything written to file descriptor 2 (C++ included) into ``lines``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def one_line(err: BaseException) -> str:
    """``error: <message>`` on one line, for stderr."""
    return "error: " + " ".join(str(err).split())
