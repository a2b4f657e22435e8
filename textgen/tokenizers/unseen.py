"""Text with symbols a model never saw: counting them, and encoding the text without them (skip)
or with stand-ins the model knows (replace). Each kind of tokenizer knows what it cannot spell and
what stands in for it; here the choice is checked and handed to it."""

from __future__ import annotations

from textgen.errors import TextgenError
from textgen.tokenizers.base import Tokenizer, UnseenSymbols

UNKNOWN_HANDLING = ("skip", "replace")


def encode_leniently(tokenizer: Tokenizer, text: str, unknown: str) -> list[int]:
    """`text` as ids, with the symbols the model never saw dropped (`skip`) or stood in for (`replace`).

    A word model replaces an unseen word with <unk>, the token it learnt for rare words. A char
    model replaces an unseen character with a plain form it knows (é -> e, ’ -> ', … -> ...),
    or the other case (A -> a), else with a space, else drops it. A subword model can spell anything, so nothing changes.
    """
    if unknown not in UNKNOWN_HANDLING:
        raise TextgenError(f"unknown symbols must be skipped or replaced, not {unknown!r}")
    return tokenizer.encode_leniently(text, unknown)


def unseen_symbols(tokenizer: Tokenizer, text: str) -> UnseenSymbols:
    """Count the symbols of `text` outside the model's vocabulary, and the characters they cover."""
    return tokenizer.unseen(text)
