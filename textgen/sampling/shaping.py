"""Shaping the next-token distribution and drawing from it: repetition penalty, temperature,
top-k, top-p, then one uniform number per row inverted through the cumulative distribution.

Plain functions on logits, so the sampler, the interactive mode and the Python API's
next_tokens all shape a distribution the same way.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Protocol

import torch

from textgen.config import SampleConfig

# A draw's uniform number is scaled by this so that u * total stays below total after rounding.
_BELOW_ONE = 1.0 - 2.0**-50
# Up to this many candidates in all (16 samples at top-k 40 are 640), the draw is done in Python:
# right after a model step, whose weights push the draw's code out of the CPU's caches, torch's six
# calls cost about 65 us whatever the batch, Python's lists 14 us for one row, 40 for 16, 120 for 64.
_PYTHON_DRAW_MAX_CANDIDATES = 1024
# Logits are float32 (at most 3.4e38): below this temperature, a logit of 1e8 / T could overflow.
_SHIFT_BELOW_TEMPERATURE = 1e-20


class Shaping(Protocol):
    """The settings a draw reads: SampleConfig has them, and so does a server's request."""

    temperature: float
    top_k: int
    top_p: float
    greedy: bool
    repetition_penalty: float


def candidates(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens a draw may pick from each row of `logits` (batch, vocab) and their probabilities,
    shaped in the order users expect: temperature, then top-k (0 = off), then top-p (1.0 = off).

    With top-k or top-p on, the candidates are the likeliest first, as (probabilities, token ids),
    each (batch, k); otherwise (probabilities over the whole vocabulary, None). Working on the k
    survivors rather than masking the whole vocabulary keeps a step cheap.
    """
    logits = logits.float()
    ids = None
    if 0 < top_k < logits.shape[-1]:
        logits, ids = torch.topk(logits, top_k, dim=-1)  # exactly k, likeliest first
    elif top_p < 1.0:
        logits, ids = torch.sort(logits, dim=-1, descending=True)
    if temperature < _SHIFT_BELOW_TEMPERATURE:
        # Shift so the largest logit is 0 before scaling: a tiny temperature then gives -inf, not
        # inf - inf. (Softmax shifts anyway; above this temperature no logit can overflow.)
        largest = logits.narrow(-1, 0, 1) if ids is not None else logits.max(dim=-1, keepdim=True).values
        logits = logits - largest
    probabilities = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        # Drop a token when the likelier ones before it already reach top_p; the first always stays.
        # (At top_p 1.0 nothing is computed, so rounding cannot trim the tail.)
        drop = probabilities.cumsum(dim=-1) - probabilities >= top_p
        probabilities = probabilities.masked_fill(drop, 0.0)
        probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
    return probabilities, ids

def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: tokens already in the text (`seen`, a bool mask like `logits`)
    have positive logits divided and negative ones multiplied by `penalty`."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def penalize_presence(logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float) -> torch.Tensor:
    """OpenAI's presence and frequency penalties: every token already drawn (`counts`, how often,
    like `logits`) loses `presence` once and `frequency` per time it was drawn."""
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts


def draw(probabilities: torch.Tensor, uniforms: Sequence[float]) -> list[int]:
    """One index per row of `probabilities` by inverting its cumulative distribution at that row's
    number u in [0, 1): each row uses exactly one number, and an entry of probability 0 is never
    drawn (the first entry whose cumulative probability exceeds u * total has a probability above 0).

    The cumulative sums are float64, added left to right, in Python for a few candidates (up to
    about 25 samples at top-k 40) and by torch otherwise, with the same result.
    """
    if probabilities.numel() <= _PYTHON_DRAW_MAX_CANDIDATES:
        return [_invert(row, u) for row, u in zip(probabilities.tolist(), uniforms)]
    cumulative = torch.cumsum(probabilities, dim=-1, dtype=torch.float64)
    scaled = torch.tensor([u * _BELOW_ONE for u in uniforms], dtype=torch.float64, device=cumulative.device)
    target = scaled.view(-1, 1) * cumulative[:, -1:]
    indices = torch.searchsorted(cumulative, target, right=True).view(-1)
    return indices.clamp_(max=probabilities.shape[-1] - 1).tolist()  # only a NaN row could reach past the end


def _invert(probabilities: list[float], u: float) -> int:
    cumulative = list(itertools.accumulate(probabilities))
    # u is scaled just below 1 so that u * total, rounded, stays below total.
    return min(bisect.bisect_right(cumulative, u * _BELOW_ONE * cumulative[-1]), len(cumulative) - 1)


def choose_tokens(
    logits: torch.Tensor,
    config: SampleConfig | Shaping,
    streams: Sequence[random.Random],
    seen: torch.Tensor | None = None,
    banned: int | None = None,
) -> list[int]:
    """The next token of each row of `logits` (batch, vocab), drawing with that row's stream
    (greedy decoding draws nothing). Apple's MPS has no float64 for the draw: there the choice is
    made on the CPU."""
    if logits.device.type == "mps":
        logits, seen = logits.cpu(), None if seen is None else seen.cpu()
    logits = logits.float()
    if seen is not None:
        logits = penalize_repeats(logits, seen, config.repetition_penalty)
    if banned is not None:
        logits = logits.clone() if seen is None else logits
        logits[:, banned] = float("-inf")  # a model should write words, not "<unk>"
    if config.greedy:
        return logits.argmax(dim=-1).tolist()
    probabilities, ids = candidates(logits, config.temperature, config.top_k, config.top_p)
    chosen = draw(probabilities, [stream.random() for stream in streams])
    if ids is None:
        return chosen
    return [row[index] for row, index in zip(ids.tolist(), chosen)]
