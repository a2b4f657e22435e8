"""How the weights move: AdamW with decay on the weight matrices only, the learning-rate schedule
(linear warm-up, then cosine decay), and an optional moving average of the weights that is
evaluated and saved in place of the live ones.

The training loop (textgen/training/loop.py) owns when these run; this module owns what they do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from textgen.config import TrainConfig
from textgen.model import RNNLanguageModel


def learning_rate_at(config: TrainConfig, step: int, fraction_done: float) -> float:
    """Linear warm-up over the first steps, then cosine decay to min_lr_ratio by the end of the run."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction_done)))
    return config.learning_rate * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def make_optimizer(model: RNNLanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    # Decay the weight matrices only: shrinking biases and gains towards zero buys nothing.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        # The fused kernel updates every tensor in one pass: measurably faster on a CPU at small batches.
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, 0.99), fused=True)
    except (RuntimeError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, 0.99))


class WeightAverage:
    """An exponential moving average of the weights, kept beside them in float32."""

    def __init__(self, model: RNNLanguageModel, decay: float) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters()]
        self.averages = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        # Early on, average over the steps so far rather than over a start that is mostly noise.
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.averages, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the averages (twice restores both)."""
        for param, average in zip(self.params, self.averages):
            kept = param.detach().clone()
            param.copy_(average)
            average.copy_(kept)


@contextmanager
def averaged_weights(average: WeightAverage | None) -> Iterator[None]:
    """Evaluate or save the averaged weights, then carry on training the live ones."""
    if average is None:
        yield
        return
    average.swap()
    try:
        yield
    finally:
        average.swap()
