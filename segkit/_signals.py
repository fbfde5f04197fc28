"""Signals: SIGTERM stopping a command as Ctrl+C does.

At the bottom of segkit's layers, with :mod:`segkit._files`. Handlers can only be set in the
main thread; elsewhere these are no-ops, and signals reach the main thread's handlers anyway.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


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
