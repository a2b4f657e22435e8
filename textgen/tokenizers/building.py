"""Learning a tokenizer of the configured kind from a text, and reading one back from the files
it saved in a checkpoint (JSON or a sentencepiece proto, never code)."""

from __future__ import annotations

import json
from pathlib import Path

from textgen.config import TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers.base import JSON_FILE, MODEL_FILE, UNK, Tokenizer, read_tokenizer_file
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer
from textgen.tokenizers.subword import SentencePieceTokenizer
from textgen.tokenizers.word import WordTokenizer


def build_tokenizer(config: TokenizerConfig, text: str) -> Tokenizer:
    """Learn a vocabulary of `config.kind` from `text` (with the end marker in document mode)."""
    tokenizer = _build_base(config, text)
    return DocumentTokenizer(tokenizer, config.documents) if config.documents != "none" else tokenizer


def load_tokenizer(directory: Path, config: TokenizerConfig) -> Tokenizer:
    """Read back what `save` wrote into `directory` for a tokenizer of `config.kind`."""
    tokenizer = _load_base(directory, config)
    return DocumentTokenizer(tokenizer, config.documents) if config.documents != "none" else tokenizer


def _build_base(config: TokenizerConfig, text: str) -> Tokenizer:
    if not text:
        raise TextgenError("cannot learn a vocabulary from empty text")
    if config.kind == "char":
        return CharTokenizer.from_text(text)
    if config.kind == "word":
        return WordTokenizer.from_text(text, config.max_vocab, config.min_count, config.fold_spaces)
    return SentencePieceTokenizer.from_texts([text], config.vocab_size, config.subword_model, config.subword_sample)


def _load_base(directory: Path, config: TokenizerConfig) -> Tokenizer:
    if config.kind == "subword":
        path = Path(directory) / MODEL_FILE
        try:
            tokenizer = SentencePieceTokenizer(read_tokenizer_file(path))
        except (RuntimeError, ValueError):
            raise TextgenError(f"{path}: not a valid sentencepiece model") from None
        if not tokenizer.can_spell_anything():
            raise TextgenError(f"{path}: not a sentencepiece model written by textgen")
        return tokenizer

    path = Path(directory) / JSON_FILE
    try:
        data = json.loads(read_tokenizer_file(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextgenError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    found = data.get("kind") if isinstance(data, dict) else None
    if found != config.kind:
        raise TextgenError(f"{path}: expected a {config.kind} tokenizer, found {found!r}")
    tokens = data.get("tokens")
    if not (
        isinstance(tokens, list)
        and tokens
        and all(isinstance(t, str) and t for t in tokens)
        and len(set(tokens)) == len(tokens)
    ):
        raise TextgenError(f"{path}: 'tokens' must be a list of distinct non-empty strings")
    if config.kind == "char":
        if any(len(t) != 1 for t in tokens):
            raise TextgenError(f"{path}: every char token must be a single character")
        return CharTokenizer(tokens)
    fold_spaces = data.get("fold_spaces", False)
    if tokens[0] != UNK or not isinstance(fold_spaces, bool):
        raise TextgenError(f"{path}: a word vocabulary starts with {UNK!r}, fold_spaces is a bool")
    return WordTokenizer(tokens, fold_spaces)
