"""in_passing_thread: torch work outside the engine thread runs in a thread that ends with it."""

import threading

import pytest

from textgen.serve.threads import in_passing_thread


def test_the_work_runs_in_a_thread_of_its_own_that_has_ended_when_it_returns():
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 7

    assert in_passing_thread(work) == 7
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_its_exception_reaches_the_caller():
    def work() -> None:
        raise ValueError("no such checkpoint")

    with pytest.raises(ValueError, match="no such checkpoint"):
        in_passing_thread(work)
