"""Memory reach: how much each extra stretch of context helps a model. The text is scored with the
recurrent state reset every k tokens, for k = 1, 2, 4, ... and then never; where the figure stops
improving, the model stops using what came before."""

from __future__ import annotations

import math

import torch

from textgen.data import Window
from textgen.evaluation import score_windows, total_loss
from textgen.evaluation.scoring import window_within_memory
from textgen.model import RNNLanguageModel
from textgen.reports import MemoryPoint


# A point with the state reset every k tokens scores at most this many predictions: every m-th
# segment of k, evenly spread along the text. The curve's shape needs no more, and each point
# costs a pass of the model over what it scores.
MAX_PREDICTIONS_PER_POINT = 16_384


def memory_reach(model: RNNLanguageModel, ids: list[int], characters: int, longest: int = 4096) -> list[MemoryPoint]:
    """Bits per character of the predictions of ids[1:] with the state reset every k tokens, for
    k = 1, 2, 4, ... up to `longest` (and below the text's length), then never reset; `characters`
    is what ids[1:] spell. On a long text a reset point scores an even sample of its segments
    (MAX_PREDICTIONS_PER_POINT), at the text's mean characters per token."""
    count = len(ids) - 1
    if count < 1:
        return []
    tensor = torch.tensor(ids, dtype=torch.long)
    characters_per_token = characters / count
    points = []
    k = 1
    while k < min(count, longest + 1):
        nats, scored = _reset_every(model, tensor, k)
        points.append(MemoryPoint(k, nats / math.log(2) / (scored * characters_per_token), nats / scored, scored))
        k *= 2
    # Never reset: one row carried through the text, or on a long text a few rows of at least
    # `longest` tokens side by side (a row of 100,000 steps one after another takes seconds).
    rows = 1 if count <= MAX_PREDICTIONS_PER_POINT else max(1, min(32, count // max(longest, 1)))
    nats, _ = total_loss(model, tensor, rows=rows)
    points.append(MemoryPoint(None, nats / math.log(2) / characters, nats / count, count))
    return points


def _reset_every(model: RNNLanguageModel, ids: torch.Tensor, k: int) -> tuple[float, int]:
    """Segments of k predictions side by side as batch rows, each from a zero state (the last
    one padded), every m-th of them when there are more than MAX_PREDICTIONS_PER_POINT; scored in
    groups of rows small enough for memory. The nats and how many predictions they cover."""
    count = ids.numel() - 1
    segments = math.ceil(count / k)
    inputs = torch.zeros(segments * k, dtype=torch.long)
    targets = torch.full((segments * k,), -100, dtype=torch.long)
    inputs[:count], targets[:count] = ids[:-1], ids[1:]
    every = max(1, math.ceil(segments * k / MAX_PREDICTIONS_PER_POINT))
    inputs, targets = inputs.view(segments, k)[::every], targets.view(segments, k)[::every]
    scored = int((targets != -100).sum())
    rows = max(1, window_within_memory(model, 1, segments * k) // k)
    total = 0.0
    for start in range(0, segments, rows):
        total += score_windows(model, [Window(inputs[start:start + rows], targets[start:start + rows])],
                               len(inputs[start:start + rows]))
    return total, scored
