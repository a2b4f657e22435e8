"""Tests for process_guard.py, the check that a test starting a process is marked slow. Every start
tried here is refused before a process exists, so these tests start none and need no mark."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import types

import pytest

from process_guard import phase_with_processes_refused, processes_refused

REFUSED = r"^tests/t\.py::t tries to start a process \({}\) but is not marked @pytest\.mark\.slow"


def fake_test(slow: bool) -> types.SimpleNamespace:
    """What the guard reads of a pytest item: its id and whether it carries the slow mark."""
    return types.SimpleNamespace(nodeid="tests/t.py::t",
                                 get_closest_marker=lambda name: object() if slow and name == "slow" else None)


@pytest.mark.parametrize("start, name", [
    (lambda: subprocess.run([sys.executable, "-c", "pass"]), "subprocess.Popen"),
    (lambda: multiprocessing.get_context("spawn").Process(target=print).start(), "multiprocessing"),
    (lambda: os.system("true"), "os.system"),
], ids=["subprocess", "multiprocessing", "os.system"])
def test_each_way_of_starting_a_process_is_refused_naming_the_test_and_the_way(start, name):
    with processes_refused("tests/t.py::t") as tried:
        with pytest.raises(pytest.fail.Exception, match=REFUSED.format(name)):
            start()
    assert tried == [name]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_bare_fork_is_refused():
    with processes_refused("tests/t.py::t") as tried:
        with pytest.raises(pytest.fail.Exception, match=REFUSED.format(r"os\.fork")):
            os.fork()
    assert tried == ["os.fork"]


def test_the_refusal_is_lifted_when_the_guard_ends():
    before = subprocess.Popen.__init__
    with processes_refused("tests/t.py::t"):
        assert subprocess.Popen.__init__ is not before
    assert subprocess.Popen.__init__ is before


def test_a_test_that_catches_the_refusal_still_fails():
    phase = phase_with_processes_refused(fake_test(slow=False))
    next(phase)
    try:
        subprocess.run([sys.executable, "-c", "pass"])
    except BaseException:  # noqa: BLE001 - as code under test might
        pass
    with pytest.raises(pytest.fail.Exception, match=REFUSED.format("subprocess.Popen")):
        phase.send(None)


def test_an_error_that_follows_a_refused_start_is_reported_as_the_start():
    phase = phase_with_processes_refused(fake_test(slow=False))
    next(phase)
    try:
        subprocess.run([sys.executable, "-c", "pass"])
    except BaseException:  # noqa: BLE001
        pass
    with pytest.raises(pytest.fail.Exception, match=REFUSED.format("subprocess.Popen")):
        phase.throw(AssertionError("the process's output was missing"))


def test_a_test_that_starts_nothing_keeps_its_own_outcome():
    phase = phase_with_processes_refused(fake_test(slow=False))
    next(phase)
    with pytest.raises(AssertionError, match="its own failure"):
        phase.throw(AssertionError("its own failure"))
    phase = phase_with_processes_refused(fake_test(slow=False))
    next(phase)
    with pytest.raises(StopIteration) as finished:
        phase.send("the hook's result")
    assert finished.value.value == "the hook's result"


def test_a_slow_test_runs_without_the_guard():
    before = subprocess.Popen.__init__
    phase = phase_with_processes_refused(fake_test(slow=True))
    next(phase)
    assert subprocess.Popen.__init__ is before  # whatever it was, this guard added nothing
    with pytest.raises(StopIteration):
        phase.send(None)
