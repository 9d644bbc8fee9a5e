"""Ctrl-C that is never lost.

Python raises :class:`KeyboardInterrupt` in whatever code runs when SIGINT arrives. When that
code is a finaliser or a weakref callback (TensorFlow and Keras free many objects while they
train), the interpreter prints "Exception ignored" and carries on, and the run would go on as if
Ctrl-C had never been pressed. Inside :func:`catch_interrupts` every SIGINT is also recorded
(and the "Exception ignored" traceback of such a KeyboardInterrupt is not printed), and
:func:`raise_if_interrupted` raises it again at the next safe point: each batch and epoch end
(:class:`StopOnInterrupt`) and each stage the trainer finishes.

Example:
    >>> with catch_interrupts():
    ...     raise_if_interrupted()  # no Ctrl-C yet: nothing happens
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import keras

_requested = False


def _on_sigint(signum: int, frame: Any) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def catch_interrupts() -> Iterator[None]:
    """Record each SIGINT while the block runs (main thread only; elsewhere a no-op)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hook = sys.unraisablehook

    def quiet(info: Any) -> None:  # recorded, raised again later: not worth a traceback
        if info.exc_type is not KeyboardInterrupt:
            hook(info)

    previous = signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = quiet
    _requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
        _requested = False


def raise_if_interrupted() -> None:
    """Raise :class:`KeyboardInterrupt` if a SIGINT arrived inside :func:`catch_interrupts`."""
    if _requested:
        raise KeyboardInterrupt


class StopOnInterrupt(keras.callbacks.Callback):
    """Stops ``fit`` at the next batch or epoch end after a Ctrl-C that Python swallowed.

    Put it after the callbacks that save an epoch, so a finished epoch is kept.
    """

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        raise_if_interrupted()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        raise_if_interrupted()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        raise_if_interrupted()
