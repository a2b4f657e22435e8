"""Characters as tokens: one id per Unicode code point seen in the training text."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import numpy as np

from textgen.config import TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers.base import (
    JSON_FILE, TokenList, TokenNumbering, UnseenSymbols, describe_symbols, ids_dtype, read_token_list,
)

_CODE_POINTS = 0x110000  # all of Unicode
# Typographic marks that NFKC leaves alone, and the plain marks a model has more likely seen.
_PLAIN_MARKS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                              "\u2014": "-", "\u00a0": " ", "\u2212": "-"})


class CharTokenizer(TokenList):
    """One token per Unicode code point; the vocabulary is every character seen."""

    kind = "char"
    # A held-out text's characters must be in the vocabulary too, so it is learnt from them all.
    learns_from_whole_text = True
    encodes_faster_in_workers = False  # one vectorised lookup beats sending the text to a worker

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @classmethod
    def learn(cls, pieces: Iterable[str], config: TokenizerConfig) -> CharTokenizer:
        """Every character of the pieces, in code point order, marked in a table of all code
        points: no Python loop per character, however big the text."""
        seen = np.zeros(_CODE_POINTS, dtype=bool)
        for piece in pieces:
            seen[_code_points(piece)] = True
        return cls([chr(code) for code in np.flatnonzero(seen)])

    @classmethod
    def load(cls, directory: Path) -> CharTokenizer:
        tokens = read_token_list(directory, cls.kind)["tokens"]
        if any(len(t) != 1 for t in tokens):
            raise TextgenError(f"{Path(directory) / JSON_FILE}: every char token must be a single character")
        return cls(tokens)

    @staticmethod
    def piece_end(text: str) -> int:
        return len(text)  # a character is never cut

    @classmethod
    def numbering(cls, config: TokenizerConfig) -> TokenNumbering | None:
        return None  # the vocabulary is known before the text is encoded

    @property
    def unk_id(self) -> int | None:
        return None

    def encode(self, text: str) -> list[int]:
        try:
            return list(map(self._index.__getitem__, text))
        except KeyError:
            self._refuse(text)

    def encode_array(self, text: str) -> np.ndarray:
        """encode()'s ids in one vectorised lookup from code point to id."""
        ids = self._id_of_code_point[_code_points(text)]
        if ids.size and int(ids.max()) == self.vocab_size:  # the mark of a character outside the vocabulary
            self._refuse(text)
        return ids.astype(ids_dtype(self.vocab_size), copy=False)

    def unknown_symbols(self, text: str) -> list[str]:
        return [c for c in dict.fromkeys(text) if c not in self._index]

    def unseen(self, text: str) -> UnseenSymbols:
        symbols = self.unknown_symbols(text)
        occurrences = sum(map(text.count, symbols))
        return UnseenSymbols(symbols, occurrences, occurrences)

    def encode_leniently(self, text: str, unknown: str) -> list[int]:
        """Unseen characters dropped ("skip"), or replaced by a plain form the vocabulary holds
        (é -> e, ’ -> ', … -> ...), else the other case (A -> a), else a space, else dropped."""
        if unknown == "skip":
            return self.encode("".join(c for c in text if c in self._index))
        return self.encode("".join(map(self._stand_in, text)))

    def _stand_in(self, char: str) -> str:
        if char in self._index:
            return char
        plain = unicodedata.normalize("NFKC", char).translate(_PLAIN_MARKS)
        plain = "".join(c for c in unicodedata.normalize("NFKD", plain) if not unicodedata.combining(c))
        for candidate in (plain, plain.lower(), plain.upper(), " "):
            if candidate and not self.unknown_symbols(candidate):
                return candidate
        return ""

    @cached_property
    def _id_of_code_point(self) -> np.ndarray:
        """Each code point's id, and vocab_size for those outside the vocabulary (so the table is wide
        enough for one id more than it holds). All of Unicode, so no code point needs a bounds check:
        a megabyte or two, of which a text reads only the few cache lines of its characters."""
        table = np.full(_CODE_POINTS, self.vocab_size, dtype=ids_dtype(self.vocab_size + 1))
        table[[ord(t) for t in self._tokens]] = np.arange(len(self._tokens))
        return table

    def _refuse(self, text: str) -> NoReturn:
        # Only the failing path pays for finding every unseen character;
        # repr() makes a newline, a tab or a space visible in the message.
        shown = describe_symbols(self.unknown_symbols(text), limit=20)
        raise TextgenError(f"the model never saw these characters: {shown}") from None


def _code_points(text: str) -> np.ndarray:
    # "surrogatepass": a lone surrogate is a code point like any other, as it is to encode().
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
