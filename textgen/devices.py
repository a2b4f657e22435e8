"""Choosing where tensors live (CUDA, then Apple MPS, then the CPU, unless the user names one)
and in what precision the training arithmetic runs there; and the allocator setting that a
training process wants on glibc."""

from __future__ import annotations

import ctypes
import functools
import os

import torch

from textgen.config import OptionError

# What a CPU can do with bfloat16 autocast: multiply it in hardware (AVX-512 BF16 or AMX),
# emulate it with plain AVX-512 (it works, slower than float32), or nothing at all: on an
# AVX2-only CPU oneDNN has no bfloat16 LSTM and the first forward pass raises.
NATIVE, EMULATED, UNSUPPORTED = "native", "emulated", "unsupported"


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError("device", f"must be auto, cpu, cuda, cuda:N or mps, not {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", "cuda was asked for, but this torch build sees no CUDA GPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise OptionError("device", f"{name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if device.type == "mps" and not _mps_available():
        raise OptionError("device", "mps was asked for, but Apple's MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise OptionError("device", f"must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def bfloat16_support(device: torch.device) -> str:
    """NATIVE, EMULATED or UNSUPPORTED: what bfloat16 autocast does on `device`."""
    if device.type == "cuda":
        return NATIVE if torch.cuda.is_bf16_supported() else UNSUPPORTED
    if device.type == "cpu":
        if not cpu_runs_bfloat16_lstm():
            return UNSUPPORTED
        return NATIVE if cpu_multiplies_bfloat16() else EMULATED
    return UNSUPPORTED  # MPS: no bfloat16 LSTM


def cpu_multiplies_bfloat16() -> bool:
    """Whether the CPU has bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


# glibc's mallopt parameters (malloc.h), and the values a training process wants.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_KEEP_FREED_MEMORY = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))


def uses_glibc() -> bool:
    """Whether this process's C library is glibc (musl, macOS and Windows have other allocators)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a training step frees for the next step, rather than
    return it to the kernel. True where it took effect; False (and nothing changed) off glibc.

    By default glibc maps every block over 32 MB afresh and trims the top of its heap after each
    free, so a step's activations, gradients and oneDNN workspaces arrive on fresh pages that the
    kernel must fault in and zero. For a 2 x 512 LSTM on a 2-core CPU that was a quarter of every
    step (benchmarks/README.md). The price is that the process holds its peak memory until it exits,
    which a training run does anyway; it is process-wide, so the CLI calls it, the library does not."""
    if not uses_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in _KEEP_FREED_MEMORY)


@functools.cache
def cpu_runs_bfloat16_lstm() -> bool:
    """Whether this torch build can run an LSTM under bfloat16 autocast on this CPU.

    Tried rather than inferred from CPU flags: the answer depends on oneDNN's build and on
    ONEDNN_MAX_CPU_ISA as much as on the chip, and a few milliseconds settle it."""
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's random weights must not shift a seeded run
            lstm = torch.nn.LSTM(4, 4, batch_first=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                output, _ = lstm(torch.zeros(1, 2, 4))
            output.float().sum().backward()
    except RuntimeError:
        return False
    return True


def training_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the `precision` setting on `device`, or None for plain float32.

    auto takes bfloat16 only where the hardware multiplies it; an explicit bfloat16 is honoured
    where it merely works (emulated, slower) and refused in one line where it cannot run."""
    if precision == "float32":
        return None
    support = bfloat16_support(device)
    if precision == "bfloat16":
        if device.type == "mps":
            raise OptionError("precision", "bfloat16 is not supported on Apple's MPS; use float32")
        if support == UNSUPPORTED:
            where = "this GPU" if device.type == "cuda" else "this CPU (PyTorch needs AVX-512 for it)"
            raise OptionError("precision", f"bfloat16 cannot run on {where}; use {{precision}} float32 or auto")
        return torch.bfloat16
    return torch.bfloat16 if support == NATIVE else None


def precision_note(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A line for the run's plan when the chosen precision will be slower than the user may expect."""
    if dtype is torch.bfloat16 and device.type == "cpu" and bfloat16_support(device) == EMULATED:
        return ("bfloat16 is emulated on this CPU (no AVX-512 BF16 or AMX): expect it to be slower "
                "than float32")
    return None
