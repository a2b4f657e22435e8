"""The LSTM (Hochreiter & Schmidhuber, 1997): a cell state c beside h, written and read through
input, forget and output gates."""

from __future__ import annotations

import torch
from torch import nn

from textgen.model.cells.base import CellKind, LayerState, StepInputs


class LSTM(CellKind):
    name = "lstm"
    state_parts = ("h", "c")
    sigmoid_gates = {"input gate": 0, "forget gate": 1, "output gate": 3}  # torch stacks i, f, g, o

    def build(self, **shape: int | float | bool) -> nn.Module:
        return nn.LSTM(**shape)

    def init_weights(self, weights: dict[str, torch.Tensor], hidden: int) -> None:
        # A forget-gate bias of 1 lets gradients flow through long windows from the first step.
        with torch.no_grad():
            weights["bias_ih"].zero_()
            weights["bias_ih"][hidden : 2 * hidden].fill_(1.0)
            weights["bias_hh"].zero_()

    def fast_row_order(self, hidden: int) -> torch.Tensor:
        # i, f, o, g: one sigmoid covers the three gates side by side.
        return torch.cat([torch.arange(0, 2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                          torch.arange(2 * hidden, 3 * hidden)])

    def fast_step(self, layer: StepInputs, tokens: torch.Tensor, below: torch.Tensor | None,
                  state: LayerState) -> LayerState:
        h, c = state
        hidden = h.shape[1]
        sigmoid_part, g = layer.joint(tokens, below, h).split_with_sizes([3 * hidden, hidden], dim=1)
        i, f, o = torch.sigmoid(sigmoid_part).chunk(3, dim=1)
        c = torch.addcmul(f * c, i, torch.tanh(g))
        return o * torch.tanh(c), c
