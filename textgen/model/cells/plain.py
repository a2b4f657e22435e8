"""The plain (Elman) RNN: h = activation(W_ih x + W_hh h + b), with tanh or ReLU."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from textgen.model.cells.base import CellKind, LayerState, StepInputs

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


class PlainRNN(CellKind):
    def __init__(self, nonlinearity: str) -> None:
        self.name = f"rnn-{nonlinearity}"
        self.nonlinearity = nonlinearity
        self.activation = _ACTIVATIONS[nonlinearity]

    def build(self, **shape: int | float | bool) -> nn.Module:
        return nn.RNN(nonlinearity=self.nonlinearity, **shape)

    def fast_step(self, layer: StepInputs, tokens: torch.Tensor, below: torch.Tensor | None,
                  state: LayerState) -> LayerState:
        return (self.activation(layer.joint(tokens, below, state[0])),)
