"""Generating text: prime the model with a seed phrase in one pass, then draw token after token,
carrying the recurrent state so each new token costs the same (the text is never fed again).

Yields text pieces as they are made; knows nothing of files or terminals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from textgen.config import SampleConfig, check_sample_config
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel
from textgen.tokenizers import StreamDecoder, Tokenizer, describe_symbols


def next_token_distribution(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """Probabilities over the vocabulary: logits scaled by 1/temperature, cut to the top k (0 = all)."""
    logits = logits.float()
    # Shift so the largest logit is 0 before scaling: a tiny temperature then gives -inf, not inf - inf.
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if 0 < top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    return torch.softmax(logits, dim=-1)


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The seed phrase as ids; an empty one starts the model at a line break, as if after a paragraph."""
    unknown = tokenizer.unknown_symbols(prompt)
    if unknown:
        raise TextgenError(f"the seed text has symbols the model never saw: {describe_symbols(unknown)}")
    if prompt:
        return tokenizer.encode(prompt)
    if not tokenizer.unknown_symbols("\n"):
        return tokenizer.encode("\n")
    return [0]


def generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    config: SampleConfig,
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece until `config.length` characters are out."""
    check_sample_config(config)
    ids = prompt_ids(tokenizer, prompt)
    device = model.decoder.weight.device
    banned = tokenizer.unk_id
    decoder = StreamDecoder(tokenizer)
    produced = 0
    # Decoding may hold text back (a partial UTF-8 sequence); the cap stops a model that only
    # ever emits such tokens from looping forever.
    tokens_left = 8 * config.length + 64
    model.eval()
    with torch.inference_mode(), _without_onednn():
        logits, state = model(torch.tensor([ids], device=device))
        logits = logits[:, -1]
        while produced < config.length and tokens_left > 0:
            tokens_left -= 1
            if banned is not None:
                logits[..., banned] = float("-inf")  # a model should write words, not "<unk>"
            probabilities = next_token_distribution(logits, config.temperature, config.top_k)
            token = torch.multinomial(probabilities.cpu(), 1, generator=generator)
            piece = decoder.feed(int(token))
            if piece:
                piece = piece[: config.length - produced]
                produced += len(piece)
                yield piece
            if produced >= config.length:
                break
            logits, state = model(token.to(device), state)
            logits = logits[:, -1]
        tail = decoder.flush()[: config.length - produced]
        if tail:
            yield tail


@contextmanager
def _without_onednn() -> Iterator[None]:
    """oneDNN's RNN kernel costs milliseconds per call at one token a step; the plain one ~10x less.
    (torch.backends.mkldnn.flags would also reset TF32 settings and warn about it.)"""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy, without reseeding torch's global generator
    else:
        generator.manual_seed(seed)
    return generator
