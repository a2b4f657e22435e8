"""Generating text: shaping.py shapes and draws from the next-token distribution, sampler.py makes
batches of samples from a seed phrase, streamed piece by piece."""

from textgen.sampling.sampler import SamplePiece, SampleText, prompt_ids, resolve_seed, sample_pieces, sample_stream
from textgen.sampling.shaping import Shaping, candidates, choose_tokens, draw, penalize_presence, penalize_repeats

__all__ = [
    "SamplePiece", "SampleText", "Shaping", "candidates", "choose_tokens", "draw", "penalize_presence",
    "penalize_repeats", "prompt_ids", "resolve_seed", "sample_pieces", "sample_stream",
]
