"""Keeping the engine thread the one computing thread of a serving process.

torch on a CPU parallelises with OpenMP, and GNU OpenMP gives every thread that starts a parallel
region a pool of worker threads of its own, which lives as long as that thread does. Once a
process holds more such threads than it has cores, every pool stops spinning while it waits for
work and sleeps instead, and each product pays to wake its workers: the engine's one-row step
measured 1.5x slower (benchmarks/HISTORY.md, 2026-12-06). So any torch work outside the engine
thread (loading a model, a reload, a benchmark's own reference loops) runs in a thread that ends
with it, and its pool ends too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def in_passing_thread(work: Callable[[], Result], name: str = "textgen-passing") -> Result:
    """work() run in a new thread that ends when it returns: its result, or its exception raised here."""
    outcome: list[Result] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 - handed to the caller whatever it is
            failure.append(error)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
