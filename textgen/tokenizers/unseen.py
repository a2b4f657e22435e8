"""Text with symbols a model never saw: counting them, and encoding the text without them (skip)
or with stand-ins the model knows (replace)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from textgen.errors import TextgenError
from textgen.tokenizers.base import Tokenizer, describe_symbols
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer
from textgen.tokenizers.subword import SentencePieceTokenizer
from textgen.tokenizers.word import WordTokenizer

# Typographic marks that NFKC leaves alone, and the plain marks a model has more likely seen.
_PLAIN_MARKS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                              "\u2014": "-", "\u00a0": " ", "\u2212": "-"})


def encode_leniently(tokenizer: Tokenizer, text: str, unknown: str) -> list[int]:
    """`text` as ids, with the symbols the model never saw dropped (`skip`) or stood in for (`replace`).

    A word model replaces an unseen word with <unk>, the token it learnt for rare words. A char
    model replaces an unseen character with a plain form it knows (é -> e, ’ -> ', … -> ...),
    or the other case (A -> a), else with a space, else drops it. A subword model can spell anything, so nothing changes.
    """
    if unknown not in ("skip", "replace"):
        raise TextgenError(f"unknown symbols must be skipped or replaced, not {unknown!r}")
    if isinstance(tokenizer, DocumentTokenizer):
        return encode_leniently(tokenizer.base, text, unknown)
    if isinstance(tokenizer, CharTokenizer):
        if unknown == "skip":
            return tokenizer.encode("".join(c for c in text if not tokenizer.unknown_symbols(c)))
        return tokenizer.encode("".join(_known_stand_in(tokenizer, c) for c in text))
    ids = tokenizer.encode(text)
    unk = tokenizer.unk_id
    if unknown == "skip" and unk is not None and not isinstance(tokenizer, SentencePieceTokenizer):
        ids = [i for i in ids if i != unk]
    return ids


@dataclass(frozen=True)
class UnseenSymbols:
    """What a text holds that the model never saw: characters for a char model, words for a word
    model (a subword model spells anything)."""

    symbols: list[str]  # each once, in order of first appearance
    occurrences: int  # how often they appear
    characters: int  # how many characters of the text they cover

    def describe(self, text_length: int) -> str:
        """"3 symbols the model never saw ('à', 'ñ', '#'), 5 occurrences, 0.02% of the text"."""
        kinds = len(self.symbols)
        share = self.characters / text_length if text_length else 0.0
        return (f"{kinds} symbol{'s' if kinds != 1 else ''} the model never saw ({describe_symbols(self.symbols)}), "
                f"{self.occurrences:,} occurrence{'s' if self.occurrences != 1 else ''}, "
                f"{share:.2%} of the text")


def unseen_symbols(tokenizer: Tokenizer, text: str) -> UnseenSymbols:
    """Count the symbols of `text` outside the model's vocabulary, and the characters they cover."""
    if isinstance(tokenizer, DocumentTokenizer):
        return unseen_symbols(tokenizer.base, text)
    if isinstance(tokenizer, CharTokenizer):
        symbols = tokenizer.unknown_symbols(text)
        occurrences = sum(map(text.count, symbols))
        return UnseenSymbols(symbols, occurrences, occurrences)
    if isinstance(tokenizer, WordTokenizer):
        words = list(map(tokenizer.word_of, tokenizer.unknown_tokens(text)))  # one pass over the text
        return UnseenSymbols(list(dict.fromkeys(words)), len(words), sum(map(len, words)))
    return UnseenSymbols([], 0, 0)


def _known_stand_in(tokenizer: CharTokenizer, char: str) -> str:
    if not tokenizer.unknown_symbols(char):
        return char
    plain = unicodedata.normalize("NFKC", char).translate(_PLAIN_MARKS)
    plain = "".join(c for c in unicodedata.normalize("NFKD", plain) if not unicodedata.combining(c))
    for candidate in (plain, plain.lower(), plain.upper(), " "):
        if candidate and not tokenizer.unknown_symbols(candidate):
            return candidate
    return ""
