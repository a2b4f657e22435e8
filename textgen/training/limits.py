"""When a run stops: its step, epoch and time limits as one value, asked how far along a run is
and whether it is done."""

from __future__ import annotations

from dataclasses import dataclass

from textgen.config import TrainConfig


@dataclass(frozen=True)
class Limits:
    """The first limit reached ends the run. With none given, the config's default time budget
    applies, so a bare `textgen train` ends."""

    max_steps: int | None = None
    epochs: float | None = None
    max_time: float | None = None  # seconds, validations included

    @classmethod
    def of(cls, config: TrainConfig) -> Limits:
        if config.max_steps is None and config.epochs is None and config.max_time is None:
            return cls(max_time=config.default_max_time)
        return cls(config.max_steps, config.epochs, config.max_time)

    def fraction_done(self, step: int, steps_per_epoch: int, elapsed: float) -> float:
        """How far along the run is, by whichever limit is nearest: the learning-rate schedule
        and the validation schedule follow it."""
        fractions = [0.0]
        if self.max_steps:
            fractions.append(step / self.max_steps)
        if self.epochs:
            fractions.append(step / (self.epochs * steps_per_epoch))
        if self.max_time:
            fractions.append(elapsed / self.max_time)
        return max(fractions)

    def reached(self, step: int, steps_per_epoch: int, elapsed: float) -> str:
        """The limit that ends the run here ("max-steps", "epochs", "max-time"), or ""."""
        if self.max_steps and step >= self.max_steps:
            return "max-steps"
        if self.epochs and step >= self.epochs * steps_per_epoch:
            return "epochs"
        if self.max_time and elapsed >= self.max_time:
            return "max-time"
        return ""
