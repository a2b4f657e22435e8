"""Tests that start processes are marked slow, so `pytest -m "not slow"` stays a quick loop that
starts none: while a test without the mark runs (set-up, call and tear-down), every way Python has
to start a process fails it, naming what it tried. conftest.py wraps each phase of each test in
`phase_with_processes_refused`."""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Generator, Iterator

import pytest

# (owner, attribute, name in the message): subprocess.run, check_output and os.popen go through
# Popen; every multiprocessing start method and ProcessPoolExecutor through BaseProcess.start;
# pty.fork and the os.spawn* functions through os.fork or os.forkpty.
PROCESS_STARTERS = (
    (subprocess.Popen, "__init__", "subprocess.Popen"),
    (multiprocessing.process.BaseProcess, "start", "multiprocessing"),
    (os, "fork", "os.fork"),
    (os, "forkpty", "os.forkpty"),
    (os, "posix_spawn", "os.posix_spawn"),
    (os, "posix_spawnp", "os.posix_spawnp"),
    (os, "system", "os.system"),
)


@contextlib.contextmanager
def processes_refused(test: str) -> Iterator[list[str]]:
    """Within: starting a process fails `test` at once; yields the list of what was tried, for the
    caller to fail the test afterwards too where the code under test caught that failure."""
    tried: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for owner, attribute, name in PROCESS_STARTERS:
            if hasattr(owner, attribute):  # posix_spawn, fork and forkpty are POSIX only
                patch.setattr(owner, attribute, _refusal(test, name, tried))
        yield tried


def _refusal(test: str, name: str, tried: list[str]) -> Callable[..., None]:
    def refuse(*args: object, **kwargs: object) -> None:
        tried.append(name)
        pytest.fail(_message(test, tried), pytrace=False)

    return refuse


def _message(test: str, tried: list[str]) -> str:
    return (f"{test} tries to start a process ({', '.join(dict.fromkeys(tried))}) but is not marked "
            "@pytest.mark.slow: mark it, or do the work in this process")


def phase_with_processes_refused(item: pytest.Item) -> Generator[None, object, object]:
    """The body of a hook wrapper around one phase of `item`: processes are refused unless the test
    is marked slow. Where the code under test caught the refusal, the test fails all the same, and
    an error that followed from the refused start is reported as that start."""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    with processes_refused(item.nodeid) as tried:
        try:
            outcome = yield
        except pytest.fail.Exception:
            raise
        except Exception:
            if not tried:
                raise
            outcome = None
    if tried:
        pytest.fail(_message(item.nodeid, tried), pytrace=False)
    return outcome
