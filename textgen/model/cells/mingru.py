"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"): the GRU with its gates reading the input
alone and no reset gate, h_t = (1 - z_t) h_(t-1) + z_t g(W_h x_t), so a window's products are one
per layer and the rest a scan (textgen/model/cells/input_gated.py)."""

from __future__ import annotations

import torch

from textgen.model.cells.input_gated import InputGatedKind


class MinGRU(InputGatedKind):
    name = "mingru"
    blocks = 2  # weight_ih stacks the update gate's rows, then the candidate's
    sigmoid_gates = {"update gate": 0}

    def update_logit(self, gates: torch.Tensor) -> torch.Tensor:
        return gates

    def init_weights(self, weights: dict[str, torch.Tensor], hidden: int) -> None:
        # An update-gate bias of -1 keeps 73% of h at each step from the start, as the LSTM's
        # forget-gate bias of 1 does, rather than half: gradients reach further back at first.
        with torch.no_grad():
            weights["bias_ih"][:hidden].fill_(-1.0)
