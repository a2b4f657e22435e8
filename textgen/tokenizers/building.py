"""The kinds of tokenizer, by the name TokenizerConfig.kind gives them, and learning a tokenizer of
the configured kind from a text (whole, or streamed in pieces) or reading one back from the files
it saved in a checkpoint (JSON or a sentencepiece proto, never code)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textgen.config import TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers.base import Tokenizer, TokenizerKind
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer
from textgen.tokenizers.subword import SentencePieceTokenizer
from textgen.tokenizers.word import WordTokenizer

# A new kind is a class that is a TokenizerKind, in a file of its own, and a line here.
KINDS: dict[str, TokenizerKind] = {
    "char": CharTokenizer,
    "word": WordTokenizer,
    "subword": SentencePieceTokenizer,
}


def tokenizer_kind(name: str) -> TokenizerKind:
    """The kind of tokenizer TokenizerConfig.kind names."""
    try:
        return KINDS[name]
    except KeyError:
        raise TextgenError(f"unknown tokenizer kind {name!r}; use one of {', '.join(KINDS)}") from None


def build_tokenizer(config: TokenizerConfig, text: str) -> Tokenizer:
    """Learn a vocabulary of `config.kind` from `text` (with the end marker in document mode)."""
    if not text:
        raise TextgenError("cannot learn a vocabulary from empty text")
    return learn_tokenizer(config, [text])


def learn_tokenizer(config: TokenizerConfig, pieces: Iterable[str]) -> Tokenizer:
    """Learn a vocabulary of `config.kind` from a text streamed in pieces, each cut where the
    kind's `piece_end` allows (with the end marker in document mode)."""
    return with_documents(tokenizer_kind(config.kind).learn(pieces, config), config)


def load_tokenizer(directory: Path, config: TokenizerConfig) -> Tokenizer:
    """Read back what `save` wrote into `directory` for a tokenizer of `config.kind`."""
    return with_documents(tokenizer_kind(config.kind).load(Path(directory)), config)


def with_documents(tokenizer: Tokenizer, config: TokenizerConfig) -> Tokenizer:
    """`tokenizer`, with the end marker of a text of documents when `config` reads documents."""
    return DocumentTokenizer(tokenizer, config.documents) if config.documents != "none" else tokenizer
