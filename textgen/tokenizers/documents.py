"""Tokenizers for a text of separate documents: any tokenizer plus one end marker that closes a
document and opens the next."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from textgen.tokenizers.base import Tokenizer, UnseenSymbols, checked_ids, ids_dtype


class DocumentTokenizer:
    """A tokenizer for a text of separate documents: the base vocabulary plus one id, the end
    marker, which closes one document and opens the next. It has no text: decoding drops it."""

    END = "<end>"

    def __init__(self, base: Tokenizer, mode: str) -> None:
        self.base = base
        self.kind = base.kind
        self.mode = mode  # "lines" or "blank-lines": how the text splits into documents
        self.end_id = base.vocab_size

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + 1

    @property
    def unk_id(self) -> int | None:
        return self.base.unk_id

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def encode_array(self, text: str) -> np.ndarray:
        # One id more than the base's may need a wider type (a char vocabulary of 256).
        return self.base.encode_array(text).astype(ids_dtype(self.vocab_size), copy=False)

    def decode(self, ids: Iterable[int]) -> str:
        ids = checked_ids(ids, self.vocab_size)
        return self.base.decode(i for i in ids if i != self.end_id)

    def unknown_symbols(self, text: str) -> list[str]:
        return self.base.unknown_symbols(text)

    def unseen(self, text: str) -> UnseenSymbols:
        return self.base.unseen(text)

    def encode_leniently(self, text: str, unknown: str) -> list[int]:
        return self.base.encode_leniently(text, unknown)

    def token_text(self, token_id: int) -> str:
        return self.END if token_id == self.end_id else self.base.token_text(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        return b"" if token_id == self.end_id else self.base.token_bytes(token_id)

    def save(self, directory: Path) -> None:
        self.base.save(directory)


def end_marker(tokenizer: Tokenizer) -> int | None:
    """The id that ends a document, for tokenizers of document-mode models; None otherwise."""
    return tokenizer.end_id if isinstance(tokenizer, DocumentTokenizer) else None
