"""Choosing where tensors live: CUDA, then Apple MPS, then the CPU, unless the user names one."""

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
