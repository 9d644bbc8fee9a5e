"""A Ctrl-C that Python swallows (raised inside a finaliser) still stops training."""

import signal
import sys

import keras
import numpy as np
import pytest

from mmkeras.training.interrupt import StopOnInterrupt, catch_interrupts, raise_if_interrupted


class _Swallowed:
    """Delivers SIGINT while Python runs its finaliser, where a KeyboardInterrupt is ignored."""

    def __del__(self) -> None:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)


class _Broken:
    def __del__(self) -> None:
        raise ValueError("a finaliser's own error")


@pytest.fixture
def printed(monkeypatch):
    """The ignored exceptions that reach the hook which prints "Exception ignored in ..."."""
    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(info.exc_type))
    return seen


def test_a_swallowed_interrupt_is_raised_at_the_next_check(printed):
    before, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    with catch_interrupts():
        raise_if_interrupted()  # nothing pressed yet
        _Swallowed()  # Python drops the KeyboardInterrupt: this block goes on
        _Broken()
        assert printed == [ValueError]  # no traceback for the recorded Ctrl-C; others as before
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is before and sys.unraisablehook is hook
    raise_if_interrupted()  # the record ends with the block


def test_fit_stops_at_the_batch_end_after_a_swallowed_interrupt(printed):
    class SwallowAt(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.batches = 0

        def on_train_batch_begin(self, batch, logs=None):
            self.batches += 1
            if self.batches == 3:
                _Swallowed()

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((80, 4), "float32"), np.zeros((80, 2), "float32")
    swallow = SwallowAt()
    with catch_interrupts(), pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[swallow, StopOnInterrupt()])
    assert swallow.batches == 3  # not the 20 batches of two epochs
    assert printed == []
