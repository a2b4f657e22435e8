"""minLSTM (Feng et al., 2024, "Were RNNs All We Needed?"): forget and input gates that read the
input alone, normalised to sum to one, and no output gate or separate cell state:
h_t = f'_t h_(t-1) + i'_t g(W_h x_t), f' = f / (f + i), i' = i / (f + i).

Since f' = 1 - i', it is minGRU's recurrence with i' as the update share: i' = sigmoid(u) for
u = log i - log f, the update logit (textgen/model/cells/input_gated.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from textgen.model.cells.input_gated import InputGatedKind


class MinLSTM(InputGatedKind):
    name = "minlstm"
    blocks = 3  # weight_ih stacks the forget gate's rows, the input gate's, then the candidate's
    sigmoid_gates = {"forget gate": 0, "input gate": 1}

    def update_logit(self, gates: torch.Tensor) -> torch.Tensor:
        forget, write = gates.chunk(2, dim=-1)
        return F.softplus(-forget) - F.softplus(-write)  # log sigmoid(write) - log sigmoid(forget)

    def init_weights(self, weights: dict[str, torch.Tensor], hidden: int) -> None:
        # A forget-gate bias of 1, as the LSTM's: h is kept more than it is overwritten at first.
        with torch.no_grad():
            weights["bias_ih"][:hidden].fill_(1.0)
