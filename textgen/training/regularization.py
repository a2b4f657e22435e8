"""AWD-LSTM's activation penalties (Merity et al., 2017), the terms the training loss adds on top
of the cross-entropy when TrainConfig.activation_penalty or activation_change_penalty is set.

AR keeps the top layer's outputs small; TAR keeps them from jumping between neighbouring steps,
so the state changes smoothly through the text. Both read the output before dropout (the raw
output), which is what was measured in benchmarks/README.md.
"""

from __future__ import annotations

import torch

from textgen.data import IGNORE


def activation_penalties(top_output: torch.Tensor, targets: torch.Tensor, activation: float,
                         change: float) -> torch.Tensor:
    """activation x the mean square of `top_output` (batch, time, hidden), plus change x the mean
    square of its step-to-step difference, over the positions whose target is scored: padding
    after a short document (targets == IGNORE) is neither penalised nor counted."""
    top = top_output.float()
    scored = (targets != IGNORE).unsqueeze(-1).to(top.dtype)  # (batch, time, 1)
    penalty = top.new_zeros(())
    if activation:
        penalty = penalty + activation * _mean_where(top.pow(2), scored)
    if change and top.shape[1] > 1:
        both = scored[:, 1:] * scored[:, :-1]  # a pair counts when both of its steps are scored
        penalty = penalty + change * _mean_where((top[:, 1:] - top[:, :-1]).pow(2), both)
    return penalty


def _mean_where(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `values` (batch, time, hidden) over the positions where `mask` (batch, time, 1) is 1."""
    return (values * mask).sum() / (mask.sum() * values.shape[-1]).clamp(min=1)
