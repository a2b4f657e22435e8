"""Fading gradients: how much the loss at one step depends on the hidden state k steps earlier,
the vanishing-gradient picture of every RNN article, measured on the user's own model.

For a few positions t of a text, the model reads up to t - K in one pass (no gradients), then
steps one token at a time, keeping each layer's hidden state; one backward pass from the loss at
t gives the gradient with respect to every one of those states. The norms are averaged over the
positions, per layer and per distance k = 0 .. K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from textgen.model import FastStep, RNNLanguageModel
from textgen.reports import GradientFade


# The positions are spread over the first tokens of a text only: each is primed by reading the
# text up to it, and this many tokens are plenty of places to average over.
SPREAD_OVER_TOKENS = 16_384


def gradient_fade(model: RNNLanguageModel, ids: list[int], distance: int = 200, positions: int = 8) -> list[GradientFade]:
    """Per layer, the mean gradient norm at each distance k (up to `distance`, or what the text
    allows), over `positions` positions spread along the text's first SPREAD_OVER_TOKENS tokens."""
    distance = min(distance, len(ids) - 2)
    if distance < 0:
        return []
    last = min(len(ids), SPREAD_OVER_TOKENS) - 2  # the last position whose next token is known
    chosen = sorted({round(distance + (last - distance) * i / max(1, positions - 1)) for i in range(positions)})
    layers = model.config.layers
    sums = torch.zeros(layers, distance + 1, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for t in chosen:
            sums += _norms_at(model, ids, t, distance)
    finally:
        model.train(was_training)
    means = sums / len(chosen)
    return [GradientFade(layer, means[layer].tolist()) for layer in range(layers)]


def _norms_at(model: RNNLanguageModel, ids: list[int], t: int, distance: int) -> torch.Tensor:
    """Gradient norms of the loss at t with respect to each layer's h at t, t - 1, ..., t - distance.

    Stepped with FastStep, where a layer's h is one tensor that feeds the layer above, the output
    and the next step alike, so its gradient takes in every path (an nn.LSTM keeps its last state
    apart from its outputs)."""
    device = model.device
    start = t - distance  # the first step whose state is kept
    step = FastStep(model, differentiable=True)
    with torch.no_grad():
        primed = model(torch.tensor([ids[:start]], device=device))[1] if start > 0 else model.init_state(1, device)
    state = [tuple(part.clone().requires_grad_() for part in layer) for layer in step.from_model_state(primed, 1)]
    kept: list[list[torch.Tensor]] = []
    logits = None
    for position in range(start, t + 1):
        logits, state = step(torch.tensor([ids[position]], device=device), state)
        # h comes first whatever else the cell carries; n-gram counts' entry (last) is no layer's
        hidden = [layer[0] for layer in state[: model.config.layers]]
        for h in hidden:
            h.retain_grad()
        kept.append(hidden)
    loss = F.cross_entropy(logits.float(), torch.tensor([ids[t + 1]], device=device))
    loss.backward()
    # kept[-1] holds h_t (k = 0); kept[0] holds h_(t - distance).
    return torch.tensor([[float(kept[-1 - k][layer].grad.norm()) for k in range(distance + 1)]
                         for layer in range(len(kept[0]))], dtype=torch.float64)
