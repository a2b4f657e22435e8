"""Decoding ids to text one token at a time, as a sampler makes them."""

from __future__ import annotations

import codecs

from textgen.tokenizers.base import Tokenizer, TokenList
from textgen.tokenizers.documents import DocumentTokenizer, end_marker


class StreamDecoder:
    """Turns ids into text one token at a time, as a sampler makes them.

    A token's bytes (a subword byte piece: part of a character) are held back until they complete
    a UTF-8 character; the tokens of a token list (char, word) are whole text already.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        base = tokenizer.base if isinstance(tokenizer, DocumentTokenizer) else tokenizer
        self._end_id = end_marker(tokenizer)
        # The incremental decoder gives the same replacement characters as a
        # one-shot decode, so feed() pieces always add up to decode().
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A token list decodes by lookup; going through decode() would cost as much again per token.
        self._texts = base._tokens if isinstance(base, TokenList) else None

    def feed(self, token_id: int) -> str:
        if token_id == self._end_id:
            return ""
        if self._texts is not None and 0 <= token_id < len(self._texts):
            return self._texts[token_id]
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
