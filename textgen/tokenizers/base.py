"""What every tokenizer is: the protocol the rest of textgen relies on (a tokenizer, and the kind
of tokenizer a class is), the shared base of the vocabularies that are lists of strings, and the
names of the files a tokenizer saves."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from textgen.config import TokenizerConfig
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
    def encode_array(self, text: str) -> np.ndarray: ...  # encode()'s ids, as ids_array() stores them
    def decode(self, ids: Iterable[int]) -> str: ...
    def unknown_symbols(self, text: str) -> list[str]: ...
    def unseen(self, text: str) -> UnseenSymbols: ...
    # `text` as ids without the symbols outside the vocabulary ("skip") or with stand-ins for them ("replace").
    def encode_leniently(self, text: str, unknown: str) -> list[int]: ...
    def token_text(self, token_id: int) -> str: ...
    def token_bytes(self, token_id: int) -> bytes: ...  # what it spells in UTF-8: maybe part of a character
    def save(self, directory: Path) -> None: ...


class TokenNumbering(Protocol):
    """A big corpus's tokens numbered in order of first appearance, before the vocabulary is known,
    so that its text is split into tokens only once; `vocabulary` then maps each number to its id."""

    def number(self, text: str) -> np.ndarray: ...  # uint32
    def __len__(self) -> int: ...  # how many numbers were given
    def vocabulary(self, counts: np.ndarray) -> tuple[Tokenizer, np.ndarray]: ...


class TokenizerKind(Protocol):
    """What a tokenizer class provides, as a kind of tokenizer (tokenizers.building registers
    each): how it learns a vocabulary from a text streamed in pieces, how it reads one back, and
    where a big corpus may be cut into pieces that it encodes as it would the whole."""

    kind: str
    learns_from_whole_text: bool  # the vocabulary holds every symbol of the text, not of its training part
    encodes_faster_in_workers: bool  # False where encode_array is one vectorised lookup

    def learn(self, pieces: Iterable[str], config: TokenizerConfig) -> Tokenizer: ...
    def load(self, directory: Path) -> Tokenizer: ...
    def piece_end(self, text: str) -> int: ...  # the longest prefix of `text` no token straddles
    def numbering(self, config: TokenizerConfig) -> TokenNumbering | None: ...


def ids_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id of a vocabulary of `vocab_size`."""
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def ids_array(ids: list[int], vocab_size: int) -> np.ndarray:
    """`ids` as a numpy array of the narrowest type their vocabulary needs."""
    return np.asarray(ids, dtype=ids_dtype(vocab_size))


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

    def encode_array(self, text: str) -> np.ndarray:
        return ids_array(self.encode(text), len(self._tokens))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(map(self._tokens.__getitem__, checked_ids(ids, len(self._tokens))))

    def token_text(self, token_id: int) -> str:
        return self._tokens[checked_ids([token_id], len(self._tokens))[0]]

    def token_bytes(self, token_id: int) -> bytes:
        return self.token_text(token_id).encode("utf-8", "surrogatepass")

    def extended(self, new_tokens: list[str]) -> TokenList:
        """This vocabulary with `new_tokens` (those it lacks) after its own: every token keeps its id."""
        return self._with_tokens(self._tokens + [t for t in dict.fromkeys(new_tokens) if t not in self._index])

    def _with_tokens(self, tokens: list[str]) -> TokenList:
        return type(self)(tokens)

    def save(self, directory: Path) -> None:
        data = {"kind": self.kind, "tokens": self._tokens, **self._extra_json()}
        text = json.dumps(data, ensure_ascii=False, indent=1)
        (Path(directory) / JSON_FILE).write_text(text + "\n", encoding="utf-8")

    def _extra_json(self) -> dict[str, object]:
        return {}


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


def describe_symbols(symbols: list[str], limit: int = 10) -> str:
    """'a', '\\n' and 3 more: repr() makes a newline, a tab or a space visible in a message."""
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(map(repr, symbols[:limit])) + more


def read_token_list(directory: Path, kind: str) -> dict[str, Any]:
    """The JSON a TokenList of `kind` saved in `directory`, its tokens checked to be distinct
    non-empty strings; anything else is a TextgenError naming the file."""
    path = Path(directory) / JSON_FILE
    try:
        data = json.loads(read_tokenizer_file(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextgenError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    found = data.get("kind") if isinstance(data, dict) else None
    if found != kind:
        raise TextgenError(f"{path}: expected a {kind} tokenizer, found {found!r}")
    tokens = data.get("tokens")
    if not (
        isinstance(tokens, list)
        and tokens
        and all(isinstance(t, str) and t for t in tokens)
        and len(set(tokens)) == len(tokens)
    ):
        raise TextgenError(f"{path}: 'tokens' must be a list of distinct non-empty strings")
    return data


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
