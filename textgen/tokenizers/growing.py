"""A trained model's vocabulary grown for a new text it is fine-tuned on: the symbols and words the
new text brings are added after the base's own tokens, so every id the base's weights know keeps
its meaning, and `origins` says which base id (if any) each id of the grown vocabulary was."""

from __future__ import annotations

from collections import Counter

from textgen.config import OptionError, TokenizerConfig
from textgen.tokenizers.base import Tokenizer
from textgen.tokenizers.building import with_documents
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer, end_marker
from textgen.tokenizers.word import WordTokenizer


def grown_tokenizer(base: Tokenizer, config: TokenizerConfig, text: str) -> Tokenizer:
    """`base`'s vocabulary grown for `text` (the whole text for char, the training part for word,
    as a fresh vocabulary learns): char adds every character it lacks, word the words a fresh
    vocabulary of `config` would keep (seen `min_count` times), all within `max_vocab`; subword
    keeps its sentencepiece model. `config.documents` decides the end marker, which is then the
    last id (a base of documents keeps its marker's weights through `origins`)."""
    plain = base.base if isinstance(base, DocumentTokenizer) else base
    if isinstance(plain, CharTokenizer):
        plain = plain.extended(sorted(plain.unknown_symbols(text)))
    elif isinstance(plain, WordTokenizer):
        plain = plain.extended(_new_words(plain, config, text))
    return with_documents(plain, config)


def _new_words(tokenizer: WordTokenizer, config: TokenizerConfig, text: str) -> list[str]:
    """The words of `text` the vocabulary lacks that a fresh one would keep, most frequent first;
    an OptionError when they do not fit within `max_vocab`."""
    counts = Counter(tokenizer.unknown_tokens(text))
    new = sorted((t for t, n in counts.items() if n >= config.min_count), key=lambda t: (-counts[t], t))
    if tokenizer.vocab_size + len(new) > config.max_vocab:
        raise OptionError("max_vocab", f"of {config.max_vocab:,} is too small for the new text: the base's "
                                       f"{tokenizer.vocab_size:,} tokens and the {len(new):,} new words seen at "
                                       f"least {config.min_count} times make {tokenizer.vocab_size + len(new):,}; "
                                       "raise it, or raise {min_count}", "min_count")
    return new


def origins(base: Tokenizer, grown: Tokenizer) -> list[int | None]:
    """For each id of `grown` (made by grown_tokenizer from `base`), the id it had in `base`, or
    None for a token new to it: the base's own tokens keep their ids, and the end marker, always
    last, is the base's marker if the base had one."""
    base_end, grown_end = end_marker(base), end_marker(grown)
    own = base.vocab_size - (base_end is not None)
    return [base_end if i == grown_end else i if i < own else None for i in range(grown.vocab_size)]
