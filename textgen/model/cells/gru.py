"""The GRU (Cho et al., 2014): h alone, updated through a reset gate and an update gate."""

from __future__ import annotations

import torch
from torch import nn

from textgen.model.cells.base import CellKind, LayerState, StepInputs


class GRU(CellKind):
    name = "gru"
    sigmoid_gates = {"reset gate": 0, "update gate": 1}  # torch stacks r, z, n
    separate_hidden = True

    def build(self, **shape: int | float | bool) -> nn.Module:
        return nn.GRU(**shape)

    def fast_step(self, layer: StepInputs, tokens: torch.Tensor, below: torch.Tensor | None,
                  state: LayerState) -> LayerState:
        (h,) = state
        two = 2 * h.shape[1]
        from_input, from_hidden = layer.apart(tokens, below, h)
        r, z = torch.sigmoid(from_input[:, :two] + from_hidden[:, :two]).chunk(2, dim=1)
        n = torch.tanh(torch.addcmul(from_input[:, two:], r, from_hidden[:, two:]))
        return (torch.addcmul(n, z, h - n),)  # (1 - z) * n + z * h
