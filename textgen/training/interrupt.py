"""Stopping a run cleanly: the first Ctrl-C (or SIGTERM) asks the loop to stop after the current
step and save; a second one aborts, but never in the middle of a save."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class StopRequest:
    """Installs the handlers for the `with` block (main thread only; elsewhere it never fires)."""

    def __init__(self, on_request: Callable[[], None]) -> None:
        self.requested = False
        self._deferring = False
        self._abort_after = False
        self._on_request = on_request
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and not self._deferring:
            raise KeyboardInterrupt
        if self.requested:
            self._abort_after = True
            return
        self.requested = True
        self._on_request()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a second Ctrl-C until the block is done: a save is never cut between its renames."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._abort_after:
            raise KeyboardInterrupt
