"""How the weights move: AdamW with decay on the weight matrices only (or Muon for the recurrent
matrices beside it, TrainConfig.optimizer), the learning-rate schedule
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
from textgen.devices import training_dtype
from textgen.model import RNNLanguageModel


def learning_rate_at(config: TrainConfig, step: int, fraction_done: float) -> float:
    """Linear warm-up over the first steps, then cosine decay to min_lr_ratio by the end of the run."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction_done)))
    return config.learning_rate * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def make_optimizer(model: RNNLanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser config.optimizer names, over every parameter of the model."""
    if config.optimizer == "muon":
        return MuonWithAdamW(model, config)
    return _adamw(list(model.parameters()), config)


def _adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    # Decay the weight matrices only: shrinking biases and gains towards zero buys nothing.
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        # The fused kernel updates every tensor in one pass: measurably faster on a CPU at small batches.
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, 0.99), fused=True)
    except (RuntimeError, TypeError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, 0.99))


# The quintic Newton-Schulz iteration of Jordan et al.'s Muon: coefficients chosen to push every
# singular value towards 1 as fast as possible, five steps leaving them between about 0.5 and 1.5.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def orthogonalised(matrix: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """About U V^T for matrix = U S V^T, computed in `dtype` by the Newton-Schulz iteration."""
    a, b, c = NEWTON_SCHULZ
    x = matrix.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:  # the Gram matrix of the shorter side is the cheaper one
        x = x.T
    x = x / x.norm().clamp(min=1e-7)  # the Frobenius norm bounds the largest singular value
    for _ in range(NEWTON_SCHULZ_STEPS):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b G + c G^2) x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for 2-D weights: Nesterov momentum, orthogonalised, with
    decoupled weight decay. torch.optim.Muon computes the iteration in bfloat16 always, which on a
    CPU without native bfloat16 took 8.5 s a step for a 2 x 384 LSTM (AVX2); here it runs in
    `dtype`, bfloat16 only where the hardware multiplies it."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float, momentum: float,
                 dtype: torch.dtype) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})
        self.dtype = dtype

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                average = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
                average.lerp_(param.grad, 1.0 - momentum)
                update = orthogonalised(param.grad.lerp(average, momentum), self.dtype)  # Nesterov
                param.mul_(1.0 - lr * group["weight_decay"])
                # An orthogonal update's entries have RMS 1/sqrt(max side); 0.2 of sqrt(max side) brings
                # it to AdamW's typical RMS (Liu et al., 2025), so AdamW's rate and decay serve.
                param.add_(update.to(param.dtype), alpha=-lr * 0.2 * math.sqrt(max(param.shape)))


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the recurrent layers' weight matrices (W_ih, W_hh: their steps are orthogonalised,
    so no direction of a matrix dominates its update) and AdamW for the embedding, the output
    layer and the biases, which Muon's authors leave to Adam, presented as one optimiser.

    Its groups are the two parts' groups themselves, so the loop's schedule sets every rate, and its
    state is one mapping both parts write into, so state_dict and load_state_dict (the trainer
    state, textgen/training/snapshot.py) save and restore every parameter's moments by index as
    they do for AdamW alone. Muon's step is scaled to the size of AdamW's (Liu et al., 2025, "Muon
    is Scalable for LLM Training"), so one learning rate and weight decay serve both.
    """

    def __init__(self, model: RNNLanguageModel, config: TrainConfig) -> None:
        matrices = [weights[name] for weights in model.layer_weights() for name in ("weight_ih", "weight_hh")
                    if weights[name] is not None]
        in_muon = {id(matrix) for matrix in matrices}
        self.parts: list[torch.optim.Optimizer] = [
            Muon(matrices, config.learning_rate, config.weight_decay, config.muon_momentum,
                 training_dtype("auto", model.device) or torch.float32),
            _adamw([p for p in model.parameters() if id(p) not in in_muon], config),
        ]
        super().__init__([group for part in self.parts for group in part.param_groups], {})
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        start = 0
        for part in self.parts:
            count = len(part.param_groups)
            part.param_groups, part.state = self.param_groups[start : start + count], self.state
            start += count

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for part in self.parts:
            part.step()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share_groups_and_state()  # loading made new group dicts and a new state mapping


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
