"""What every tokenizer is: the protocol the rest of textgen relies on, the shared base of the
vocabularies that are lists of strings, and the names of the files a tokenizer saves."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from textgen.errors import TextgenError

JSON_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"
UNK = "<unk>"


class Tokenizer(Protocol):
    kind: str  # "char" | "word" | "subword"

    @property
    def vocab_size(self) -> int: ...
    @property
    def unk_id(self) -> int | None: ...  # None when nothing can be unknown (char)
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def unknown_symbols(self, text: str) -> list[str]: ...
    def token_text(self, token_id: int) -> str: ...
    def save(self, directory: Path) -> None: ...


def checked_ids(ids: Iterable[int], size: int) -> list[int]:
    """`ids` as a list, or a TextgenError naming the first id outside a vocabulary of `size`."""
    ids = list(ids)
    # A negative id would silently index from the end of the vocabulary.
    if ids and (min(ids) < 0 or max(ids) >= size):
        bad = next(i for i in ids if not 0 <= i < size)
        raise TextgenError(f"token id {int(bad)} is outside the vocabulary of {size} tokens")
    return ids


class TokenList:
    """A vocabulary that is a list of strings: decoding is concatenation."""

    kind: str

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(self._tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(map(self._tokens.__getitem__, checked_ids(ids, len(self._tokens))))

    def token_text(self, token_id: int) -> str:
        return self._tokens[checked_ids([token_id], len(self._tokens))[0]]

    def save(self, directory: Path) -> None:
        data = {"kind": self.kind, "tokens": self._tokens, **self._extra_json()}
        text = json.dumps(data, ensure_ascii=False, indent=1)
        (Path(directory) / JSON_FILE).write_text(text + "\n", encoding="utf-8")

    def _extra_json(self) -> dict[str, object]:
        return {}


def describe_symbols(symbols: list[str], limit: int = 10) -> str:
    """'a', '\\n' and 3 more: repr() makes a newline, a tab or a space visible in a message."""
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(map(repr, symbols[:limit])) + more


def read_tokenizer_file(path: Path) -> bytes:
    """A tokenizer file's bytes; missing, unreadable or empty is a TextgenError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextgenError(f"{path}: tokenizer file is missing") from None
    except OSError as e:
        raise TextgenError(f"{path}: cannot read the tokenizer file ({e.strerror})") from None
    if not data:
        raise TextgenError(f"{path}: tokenizer file is empty")
    return data
