"""What a cell kind is: everything textgen knows about one kind of recurrent layer, in one object.

A kind says how to build its torch module, what its state is made of, how its weights start,
how the fast inference step computes one token with it, and which of its gates the insight
views can read. RNNLanguageModel, FastStep, the trainer state and insight ask the kind; none of
them compares cell names.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

# One layer's state in the fast step: a tensor per state part, each (batch, hidden), h first.
LayerState = tuple[torch.Tensor, ...]


class StepInputs(Protocol):
    """One layer's weights arranged by FastStep (textgen.model.fast_step) for a single step, its
    rows in the order of the kind's `fast_row_order`."""

    def joint(self, tokens: torch.Tensor, below: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """W_ih x + b_ih + W_hh h + b_hh in one product, (batch, gates * hidden)."""

    def apart(self, tokens: torch.Tensor, below: torch.Tensor | None,
              h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_ih x + b_ih and W_hh h + b_hh, kept apart (for kinds built with `separate_hidden`)."""


class CellKind:
    """The base every cell kind extends. `name` is the `cell` field's value (config.CELLS)."""

    name: str
    # What the state carries from step to step; the first is h, the layer's output.
    state_parts: tuple[str, ...] = ("h",)
    # The gates that are a sigmoid of W_ih x + b_ih + W_hh h + b_hh, each with its block's index
    # in torch's stacked weight rows: insight measures how often they saturate.
    sigmoid_gates: dict[str, int] = {}
    # The fast step keeps W_ih x and W_hh h apart (GRU: its reset gate scales the hidden part alone).
    separate_hidden: bool = False

    def build(self, **shape: int | float | bool) -> nn.Module:
        """The torch module for one layer or a stack (input_size, hidden_size, num_layers,
        dropout, batch_first, as nn.LSTM takes them). It names its weights as torch's recurrent
        modules do (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ...), gates stacked along
        dim 0, and takes and returns the state as state.py describes: the model, weight drop, the
        fast step and insight read it so."""
        raise NotImplementedError

    def init_weights(self, weights: dict[str, torch.Tensor], hidden: int) -> None:
        """Set a layer's starting weights (weight_ih, weight_hh, bias_ih, bias_hh, torch's
        layout) where torch's defaults are not what this kind wants; by default they are."""

    def fast_row_order(self, hidden: int) -> torch.Tensor | None:
        """The order the fast step wants the weight rows in (None: torch's own)."""
        return None

    def fast_step(self, layer: StepInputs, tokens: torch.Tensor, below: torch.Tensor | None,
                  state: LayerState) -> LayerState:
        """One token through one layer: the new state (h first) from the token ids, the layer
        below's new h (None for the first layer) and this layer's state. Write it with few tensor
        calls: at one token a step, each costs about as much as a quarter of the smaller matrix
        product."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<cell {self.name}>"
