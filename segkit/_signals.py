"""Signals: SIGTERM stopping a command as Ctrl+C does, and signals held back during a write.

At the bottom of segkit's layers, with :mod:`segkit._files` (which holds signals back while it
writes a file). Handlers can only be set in the main thread; elsewhere these are no-ops, and
signals reach the main thread's handlers anyway.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(sig: int, handler: Any) -> None:
    # None: a handler not set from Python; the default is the closest thing to put back
    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class SigtermAsInterrupt:
    """Within ``with``: SIGTERM raises ``KeyboardInterrupt`` as SIGINT does, so the same
    clean-up runs for both. ``signum`` says which one stopped the block (SIGINT by default).
    """

    def __init__(self) -> None:
        self.signum: int = signal.SIGINT
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> SigtermAsInterrupt:
        self.signum = signal.SIGINT
        self._installed = _in_main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            _restore(signal.SIGTERM, self._previous)
            self._installed = False


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then deliver them in order.

    Used around writing a file: an interrupt in the middle of ``torch.save`` breaks the writer
    (``RuntimeError: ... inline_container.cc``) instead of stopping cleanly. Up to two of each
    signal are delivered (training's handler takes the first as "stop after this step" and the
    second as "abort"); more would mean nothing else.
    """
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, f: received.append(s)) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            _restore(sig, handler)
        for i, sig in enumerate(received):
            if received[:i].count(sig) < 2:
                signal.raise_signal(sig)
