"""What minGRU and minLSTM share (Feng et al., 2024, "Were RNNs All We Needed?"): gates that read
the layer's input alone, so a whole window is one matrix product and a scan over time instead of
a loop of small products.

Both cells come down to h_t = (1 - z_t) h_(t-1) + z_t g(c_t), with z_t a sigmoid of an update logit
and c_t a candidate, both from x_t; g keeps the candidate positive (x + 0.5 above 0, a sigmoid
below), so that the window's sum can be taken in log space as Heinsen (2023) does: a cumulative sum
of the log of what is kept, then log-cumsum-exp of what is written. That parallel scan is what a
GPU runs; a CPU runs the same recurrence step by step, faster there (see `recurrence`): either
way the matrix products, the expensive part, are one per layer and window, not one per step. A
kind says how its update logit comes from its gate rows (InputGatedKind.update_logit); the rest
is here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from textgen.model.cells.base import CellKind, LayerState, StepInputs

# The scan is taken in log space over this many steps at a time, the state carried from one chunk
# to the next: a float32 log sum loses precision in proportion to its size, and over a whole long
# window the log of what is kept reaches the hundreds (1e-4 relative error at a thousand steps).
SCAN_CHUNK = 32


def positive(x: torch.Tensor) -> torch.Tensor:
    """The paper's g: x + 0.5 from 0 up, sigmoid(x) below; continuous, positive, growing."""
    # Summed rather than chosen with torch.where, whose backward fills two zero tensors: a fifth
    # of a CPU training step went there.
    return F.relu(x) + torch.sigmoid(x.clamp(max=0.0))


def log_positive(x: torch.Tensor) -> torch.Tensor:
    """log g(x), computed without forming g(x) where it is tiny."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def scan(update_logit: torch.Tensor, candidate: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Every h_t of h_t = (1 - z_t) h_(t-1) + z_t g(c_t), z_t = sigmoid(update_logit_t), from h0.

    update_logit, candidate: (batch, time, hidden); h0: (batch, hidden), any sign. Computed in
    float32 whatever the autocast: (batch, time, hidden) float32."""
    with torch.autocast(update_logit.device.type, enabled=False):
        update_logit, candidate, h = update_logit.float(), candidate.float(), h0.float()
        log_kept = -F.softplus(update_logit)  # log(1 - z)
        log_written = -F.softplus(-update_logit) + log_positive(candidate)  # log(z g(c)), always finite
        chunks = []
        for start in range(0, update_logit.shape[1], SCAN_CHUNK):
            kept = log_kept[:, start : start + SCAN_CHUNK].cumsum(dim=1)  # log of h0's weight at each step
            written = torch.logcumsumexp(log_written[:, start : start + SCAN_CHUNK] - kept, dim=1)
            chunk = torch.exp(kept) * h.unsqueeze(1) + torch.exp(kept + written)
            chunks.append(chunk)
            h = chunk[:, -1]
        return torch.cat(chunks, dim=1)


def sequential(update_logit: torch.Tensor, candidate: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """What `scan` computes, one step at a time: the gates and candidates of the whole window
    first, then one lerp a step. Computed in float32 whatever the autocast."""
    with torch.autocast(update_logit.device.type, enabled=False):
        shares, targets, h = torch.sigmoid(update_logit.float()), positive(candidate.float()), h0.float()
        outputs = []
        for share, target in zip(shares.unbind(1), targets.unbind(1)):  # unbind: one cheap backward for all
            h = torch.lerp(h, target, share)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


def recurrence(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """How a window is computed on `device`: the parallel scan on a CUDA GPU, step by step
    elsewhere (a CPU; Apple's MPS, whose kernels the scan was never tried on).

    A CPU runs a lerp over one step's (batch, hidden) in microseconds, and a window of them with
    their backward faster than the scan, whose log-cumsum-exp is a slow scalar loop in torch's CPU
    kernels: for 32 rows of 750 units, forward and backward took 9 against 160 ms at 32 steps and
    77 against 1,170 ms at 256 (one thread of a shared 2-core EPYC; a ratio, not a benchmark). A
    GPU pays a kernel launch for each step of the loop, and the scan's few launches cover any
    window: the scan is the one meant for it (unmeasured here)."""
    return scan if device.type == "cuda" else sequential


def recur(h: torch.Tensor, update_logit: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """One step, as the fast inference step takes it: h moves towards g(candidate) by the share
    sigmoid(update_logit)."""
    return torch.lerp(h, positive(candidate), torch.sigmoid(update_logit))


class InputGatedKind(CellKind):
    """A cell whose gates read the input alone: its weight_ih stacks `blocks` row blocks of hidden
    rows each, the candidate's last; it has no weight_hh (so no weight drop, which config refuses)."""

    blocks: int

    def update_logit(self, gates: torch.Tensor) -> torch.Tensor:
        """The update logit from the gate rows before the candidate's, (..., (blocks - 1) * hidden)."""
        raise NotImplementedError

    def split(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The update logit and the candidate from a layer's W_ih x + b_ih."""
        hidden = pre.shape[-1] // self.blocks
        return self.update_logit(pre[..., : -hidden]), pre[..., -hidden:]

    def build(self, **shape: int | float | bool) -> nn.Module:
        return InputGatedLayers(self, **shape)

    def fast_step(self, layer: StepInputs, tokens: torch.Tensor, below: torch.Tensor | None,
                  state: LayerState) -> LayerState:
        (h,) = state
        return (recur(h, *self.split(layer.joint(tokens, below, h))),)


class InputGatedLayers(nn.Module):
    """A stack of input-gated layers, taking and giving what nn.GRU does: x (batch, time, input)
    with batch_first, and the state h (layers, batch, hidden)."""

    def __init__(self, kind: InputGatedKind, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, batch_first: bool = False) -> None:
        super().__init__()
        self.kind, self.hidden_size, self.num_layers = kind, hidden_size, num_layers
        self.dropout, self.batch_first = dropout, batch_first
        for k in range(num_layers):
            reads = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(kind.blocks * hidden_size, reads)))
            setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(kind.blocks * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's recurrent layers' own start, so that the cells compare on equal terms.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batch_first:
            x = x.transpose(0, 1)
        if state is None:
            state = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size, dtype=torch.float32)
        last = []
        for k in range(self.num_layers):
            pre = F.linear(x, getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}"))
            x = recurrence(x.device)(*self.kind.split(pre), state[k])
            last.append(x[:, -1])
            if self.training and self.dropout and k + 1 < self.num_layers:
                x = F.dropout(x, self.dropout)
        output = x if self.batch_first else x.transpose(0, 1)
        return output, torch.stack(last)
