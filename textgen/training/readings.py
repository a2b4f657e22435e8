"""The figures of each training step (loss, gradient norm) read back from the device in batches.

Reading a number from a GPU waits for every kernel queued before it, so reading the loss after
each step would leave the GPU idle while Python prepares the next one. The steps' figures stay on
the device and are read together every few steps (and before anything that needs them: a
validation, a save, the end of the run). On a CPU a read costs nothing and happens every step, so
a diverging loss is caught before its step is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Steps between two reads of the figures, by device type; 1 elsewhere.
READ_EVERY = {"cuda": 16, "mps": 16}


@dataclass
class PendingStep:
    """A step whose loss and gradient norm are still on the device."""

    step: int  # the step's number, counted from 1
    loss: torch.Tensor  # 0-d: the mean loss, or the summed loss when `scored` is set (several processes)
    grad_norm: torch.Tensor  # 0-d
    scored: int | None  # the whole global batch's predictions, to divide the processes' summed losses by
    learning_rate: float
    tokens_per_second: float
    elapsed: float
    fraction_done: float


@dataclass
class StepFigures:
    pending: PendingStep
    loss: float
    grad_norm: float


class StepReadings:
    def __init__(self, device: torch.device) -> None:
        self.every = READ_EVERY.get(device.type, 1)
        self.pending: list[PendingStep] = []

    def add(self, step: PendingStep) -> None:
        self.pending.append(step)

    @property
    def due(self) -> bool:
        return len(self.pending) >= self.every

    def take(self, group_sum: object | None = None) -> list[StepFigures]:
        """The pending steps' figures, in one read from the device (and, across processes, one sum
        of the losses); `group_sum` adds a list of floats over all processes."""
        pending, self.pending = self.pending, []
        if not pending:
            return []
        values = torch.stack([p.loss.detach().float() for p in pending]
                             + [p.grad_norm.detach().float() for p in pending]).tolist()
        losses, norms = values[: len(pending)], values[len(pending) :]
        if group_sum is not None:
            losses = [summed / max(1, p.scored or 0) for summed, p in zip(group_sum(losses), pending)]  # type: ignore[operator]
        return [StepFigures(p, loss, norm) for p, loss, norm in zip(pending, losses, norms)]
