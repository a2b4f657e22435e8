"""Characters as tokens: one id per Unicode code point seen in the training text."""

from __future__ import annotations

from textgen.errors import TextgenError
from textgen.tokenizers.base import TokenList, describe_symbols


class CharTokenizer(TokenList):
    """One token per Unicode code point; the vocabulary is every character seen."""

    kind = "char"

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def unk_id(self) -> int | None:
        return None

    def encode(self, text: str) -> list[int]:
        try:
            return list(map(self._index.__getitem__, text))
        except KeyError:
            # Only the failing path pays for finding every unseen character;
            # repr() makes a newline, a tab or a space visible in the message.
            shown = describe_symbols(self.unknown_symbols(text), limit=20)
            raise TextgenError(f"the model never saw these characters: {shown}") from None

    def unknown_symbols(self, text: str) -> list[str]:
        return [c for c in dict.fromkeys(text) if c not in self._index]
