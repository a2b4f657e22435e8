"""Memory reach: how much each extra stretch of context helps a model. The text is scored with the
recurrent state reset every k tokens, for k = 1, 2, 4, ... and then never; where the figure stops
improving, the model stops using what came before."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from textgen.data import Window
from textgen.evaluation import score_windows, total_loss
from textgen.evaluation.scoring import window_within_memory
from textgen.model import RNNLanguageModel


@dataclass(frozen=True)
class MemoryPoint:
    reset_every: int | None  # tokens between resets of the state; None: never reset
    bits_per_char: float
    nats_per_token: float


def memory_reach(model: RNNLanguageModel, ids: list[int], characters: int, longest: int = 4096) -> list[MemoryPoint]:
    """Bits per character of the predictions of ids[1:] with the state reset every k tokens, for
    k = 1, 2, 4, ... up to `longest` (and below the text's length), then never reset. Every
    point scores exactly the same predictions; `characters` is what they spell."""
    count = len(ids) - 1
    if count < 1:
        return []
    tensor = torch.tensor(ids, dtype=torch.long)
    points = []
    k = 1
    while k < min(count, longest + 1):
        nats = _reset_every(model, tensor, k)
        points.append(MemoryPoint(k, nats / math.log(2) / characters, nats / count))
        k *= 2
    nats, _ = total_loss(model, tensor, rows=1)
    points.append(MemoryPoint(None, nats / math.log(2) / characters, nats / count))
    return points


def _reset_every(model: RNNLanguageModel, ids: torch.Tensor, k: int) -> float:
    """Segments of k predictions side by side as batch rows, each from a zero state (the last
    one padded); scored in groups of rows small enough for memory."""
    count = ids.numel() - 1
    segments = math.ceil(count / k)
    inputs = torch.zeros(segments * k, dtype=torch.long)
    targets = torch.full((segments * k,), -100, dtype=torch.long)
    inputs[:count], targets[:count] = ids[:-1], ids[1:]
    inputs, targets = inputs.view(segments, k), targets.view(segments, k)
    rows = max(1, window_within_memory(model, 1, segments * k) // k)
    total = 0.0
    for start in range(0, segments, rows):
        total += score_windows(model, [Window(inputs[start:start + rows], targets[start:start + rows])],
                               len(inputs[start:start + rows]))
    return total
