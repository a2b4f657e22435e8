"""How fast this machine trains: a second of training steps of the reference shape, timed, so the
automatic preset is chosen by the tokens a time budget buys here rather than by seconds alone
(the same 80 seconds buy two to four times fewer tokens on a laptop CPU without bfloat16 than on
one with it, or on a machine with one free core instead of two)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from textgen.config import (
    CALIBRATION_PRESET, PRESETS, ModelConfig, RunSettings, TrainConfig, settings_for, wants_automatic_preset,
)
from textgen.devices import resolve_device, training_dtype
from textgen.model import RNNLanguageModel
from textgen.training.distributed import SINGLE, Group
from textgen.training.optimization import make_optimizer

WARMUP_STEPS = 2


@dataclass(frozen=True)
class Calibration:
    tokens_per_second: float  # the calibration preset's, on this machine (all processes together)
    budget_seconds: float

    @property
    def tokens(self) -> float:
        return self.tokens_per_second * self.budget_seconds

    def describe(self) -> str:
        return (f"{self.budget_seconds:g} s at {self.tokens_per_second:,.0f} tokens/s measured here "
                f"(the {CALIBRATION_PRESET} shape) buy about {self.tokens / 1e6:.1f}M tokens")


def calibrated_settings(request: dict[str, Any], preset: str | None = None,
                        group: Group = SINGLE) -> tuple[RunSettings, Calibration | None]:
    """The run's settings, with the automatic preset (when the budget chooses it) chosen by the
    tokens the budget buys on this machine, measured now; under torchrun every process measures
    at once (they share the machine as they will in training) and the speeds are added up, so all
    choose alike. The measurement is skipped when a preset, a shape or a step limit is given."""
    settings = settings_for(request, preset)  # every option checked before anything is measured
    if not wants_automatic_preset(request, preset):
        return settings, None
    train = settings.train
    speed = group.sum([reference_speed(resolve_device(train.device), train.precision)])[0]
    calibration = Calibration(speed, train.max_time or train.default_max_time)
    return settings_for(request, preset, speed), calibration


def reference_speed(device: torch.device, precision: str, seconds: float = 0.6) -> float:
    """Training tokens per second of the calibration preset's model and batch on `device` in
    `precision`, timed over about `seconds` after a warm-up, on random ids (speed does not depend
    on the text). Leaves the global random generator as it found it."""
    preset = PRESETS[CALIBRATION_PRESET]
    rows, window = preset.train["batch_size"], preset.train["seq_len"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(vocab_size=96, **preset.model)).to(device)
        optimizer = make_optimizer(model, TrainConfig(**preset.train))
        ids = torch.randint(0, 96, (rows, window + 1), device=device)
        dtype = training_dtype(precision, device)
        steps, started = 0, 0.0
        while steps < WARMUP_STEPS + 3 or time.perf_counter() - started < seconds:
            if steps == WARMUP_STEPS:
                _synchronize(device)
                started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits, _ = model(ids[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        _synchronize(device)
    return (steps - WARMUP_STEPS) * rows * window / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
