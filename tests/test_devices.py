"""Tests for choosing the device and the training precision, on every kind of machine.

The device queries (CUDA, MPS, the CPU's bfloat16 support) are faked, so what textgen picks on a
GPU, on a Mac, on an AVX-512 BF16 server and on an AVX2 laptop is pinned on whatever CPU runs
the suite.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import types

import pytest
import torch

import textgen.devices as devices
from textgen.cli import main
from textgen.devices import (
    EMULATED, NATIVE, UNSUPPORTED, bfloat16_support, precision_note, resolve_device, training_dtype,
)
from textgen.errors import TextgenError

CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Fake a machine: set(cuda=..., mps=..., cuda_bf16=..., cpu_lstm_bf16=..., cpu_native_bf16=...)."""

    def set_up(cuda: bool = False, gpus: int = 1, mps: bool = False, cuda_bf16: bool = True,
               cpu_lstm_bf16: bool = True, cpu_native_bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(devices, "_mps_available", lambda: mps)
        monkeypatch.setattr(devices, "cpu_runs_bfloat16_lstm", lambda: cpu_lstm_bf16)
        monkeypatch.setattr(devices, "cpu_multiplies_bfloat16", lambda: cpu_native_bf16)

    return set_up


# --- where tensors live ---------------------------------------------------------------------------


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_the_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto").type == expected


def test_a_named_device_that_is_absent_is_one_clear_error(machine):
    machine(cuda=False, mps=False)
    with pytest.raises(TextgenError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(TextgenError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(TextgenError, match="must be auto, cpu, cuda, cuda:N or mps, not 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("cpu") == CPU


def test_a_gpu_number_beyond_the_machine_is_refused(machine):
    machine(cuda=True, gpus=2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(TextgenError, match="has 2 CUDA GPU"):
        resolve_device("cuda:2")


# --- what bfloat16 does where -----------------------------------------------------------------


@pytest.mark.parametrize("lstm, native, expected", [
    (True, True, NATIVE),  # AVX-512 BF16 or AMX
    (True, False, EMULATED),  # plain AVX-512
    (False, False, UNSUPPORTED),  # AVX2 only, like most laptops
])
def test_cpu_bfloat16_support_by_kind_of_cpu(machine, lstm, native, expected):
    machine(cpu_lstm_bf16=lstm, cpu_native_bf16=native)
    assert bfloat16_support(CPU) == expected


def test_auto_takes_bfloat16_only_where_the_hardware_multiplies_it(machine):
    machine(cpu_native_bf16=True)
    assert training_dtype("auto", CPU) is torch.bfloat16
    machine(cpu_native_bf16=False)
    assert training_dtype("auto", CPU) is None
    machine(cpu_lstm_bf16=False, cpu_native_bf16=False)
    assert training_dtype("auto", CPU) is None
    machine(cuda=True, cuda_bf16=True)
    assert training_dtype("auto", torch.device("cuda")) is torch.bfloat16
    machine(cuda=True, cuda_bf16=False)
    assert training_dtype("auto", torch.device("cuda")) is None
    machine(mps=True)
    assert training_dtype("auto", torch.device("mps")) is None


def test_float32_is_float32_everywhere(machine):
    machine(cuda=True, mps=True)
    for device in ("cpu", "cuda", "mps"):
        assert training_dtype("float32", torch.device(device)) is None


def test_explicit_bfloat16_runs_emulated_and_says_it_will_be_slow(machine):
    machine(cpu_lstm_bf16=True, cpu_native_bf16=False)
    assert training_dtype("bfloat16", CPU) is torch.bfloat16
    assert "emulated on this CPU" in precision_note(torch.bfloat16, CPU)
    machine(cpu_lstm_bf16=True, cpu_native_bf16=True)
    assert precision_note(torch.bfloat16, CPU) is None
    assert precision_note(None, CPU) is None


@pytest.mark.parametrize("device, setup, message", [
    ("cpu", {"cpu_lstm_bf16": False, "cpu_native_bf16": False}, "cannot run on this CPU"),
    ("cuda", {"cuda": True, "cuda_bf16": False}, "cannot run on this GPU"),
    ("mps", {"mps": True}, "not supported on Apple's MPS"),
])
def test_explicit_bfloat16_where_it_cannot_run_is_one_clear_error(machine, device, setup, message):
    machine(**setup)
    with pytest.raises(TextgenError, match=message):
        training_dtype("bfloat16", torch.device(device))


def test_the_cli_refuses_bfloat16_on_an_avx2_cpu_before_reading_the_text(
    machine, tmp_path, monkeypatch, capsys
):
    machine(cpu_lstm_bf16=False, cpu_native_bf16=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text("hello world\n" * 50, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "text.txt", "--precision", "bfloat16", "--max-steps", "2", "--out", "ck"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: --precision bfloat16 cannot run on this CPU") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "ck").exists()


def test_the_real_probe_agrees_with_a_real_bfloat16_lstm():
    """Whatever this CPU is, the probe's answer is what a bfloat16 LSTM really does here."""
    devices.cpu_runs_bfloat16_lstm.cache_clear()
    lstm = torch.nn.LSTM(8, 8, num_layers=2, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.randn(2, 3, 8))
        runs = True
    except RuntimeError:
        runs = False
    assert devices.cpu_runs_bfloat16_lstm() is runs


# glibc's mallopt parameters, as malloc.h numbers them.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


class RecordingMallopt:
    """Stands in for glibc's mallopt: records each (parameter, value) and answers `answer` (1: done)."""

    def __init__(self, answer: int = 1) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


@pytest.fixture
def c_library(monkeypatch: pytest.MonkeyPatch):
    """Fake the C library keep_freed_memory sees: set(glibc=..., mallopt=...) -> the mallopt it will
    call; the real allocator of the test process is never touched. mallopt=None: no such symbol."""

    def set_up(glibc: bool = True, mallopt: RecordingMallopt | None = None) -> RecordingMallopt | None:
        def open_library(name: object) -> types.SimpleNamespace:
            if mallopt is None:
                raise OSError("no C library here")
            return types.SimpleNamespace(mallopt=mallopt)

        monkeypatch.setattr(devices, "uses_glibc", lambda: glibc)
        monkeypatch.setattr(devices, "ctypes", types.SimpleNamespace(CDLL=open_library, c_int=ctypes.c_int))
        return mallopt

    devices.keep_freed_memory.cache_clear()
    yield set_up
    devices.keep_freed_memory.cache_clear()


def test_keeping_freed_memory_asks_glibc_for_no_mmap_no_trimming_and_a_64_mib_top_pad(c_library):
    """The page-fault figures this setting buys are measured by benchmarks/page_faults.py; here, that
    it asks glibc for exactly the three settings that keep a training step's freed blocks."""
    mallopt = c_library(glibc=True, mallopt=RecordingMallopt())
    assert devices.keep_freed_memory() is True
    assert sorted(mallopt.calls) == sorted([(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20)])


def test_keeping_freed_memory_off_glibc_changes_nothing_and_says_so(c_library):
    mallopt = c_library(glibc=False, mallopt=RecordingMallopt())
    assert devices.keep_freed_memory() is False
    assert mallopt.calls == []


def test_keeping_freed_memory_says_false_when_glibc_refuses_a_setting_or_has_no_mallopt(c_library):
    c_library(glibc=True, mallopt=RecordingMallopt(answer=0))
    assert devices.keep_freed_memory() is False
    devices.keep_freed_memory.cache_clear()
    c_library(glibc=True, mallopt=None)
    assert devices.keep_freed_memory() is False


@pytest.mark.skipif(sys.platform != "linux", reason="the C library Python links is read from its binary on Linux")
def test_uses_glibc_agrees_with_the_c_library_python_was_built_against():
    assert devices.uses_glibc() is (platform.libc_ver()[0] == "glibc")
