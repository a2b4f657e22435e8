"""Choosing where tensors live (CUDA, then Apple MPS, then the CPU, unless the user names one)
and in what precision the training arithmetic runs there."""

from __future__ import annotations

import torch

from textgen.errors import TextgenError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TextgenError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextgenError("--device cuda was asked for, but this torch build sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TextgenError("--device mps was asked for, but Apple's MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise TextgenError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    return device


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether this device multiplies bfloat16 natively, so autocast speeds training up rather than
    emulating it: AVX-512 BF16 or AMX on a CPU, Ampere or later on CUDA."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def training_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision on `device`, or None for plain float32."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        if device.type == "mps":
            raise TextgenError("--precision bfloat16 is not supported on Apple's MPS; use float32")
        return torch.bfloat16
    return torch.bfloat16 if bfloat16_is_fast(device) else None
