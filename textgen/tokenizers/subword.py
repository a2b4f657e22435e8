"""Subwords as tokens: a sentencepiece model (unigram or BPE) trained in memory, with byte fallback
so that any text can be spelt and nothing is ever unknown."""

from __future__ import annotations

import io
import itertools
import math
import random
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm

from textgen.config import SUBWORD_MODELS, OptionError, TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers.base import (
    MODEL_FILE, UNK, TokenNumbering, UnseenSymbols, checked_ids, ids_array, read_tokenizer_file,
)

# sentencepiece shows a space as this character inside its pieces.
_SP_SPACE = "\u2581"
# sentencepiece skips training sentences over 4192 bytes; 1000 code points are
# at most 4000 bytes, so long lines are cut into chunks this long instead.
_SP_CHUNK = 1000
# A sample this big or bigger is the whole text (and more than islice can count to).
_ALL = 1 << 40


class SentencePieceTokenizer:
    """Subword pieces from a sentencepiece model, falling back to UTF-8 bytes."""

    kind = "subword"
    learns_from_whole_text = False
    encodes_faster_in_workers = True

    def __init__(self, model: bytes) -> None:
        self._model = model
        self._sp = sp = spm.SentencePieceProcessor(model_proto=model)
        # Decoding is done here, not by sentencepiece: it turns a literal "▁" of
        # the text into a space, and the stream decoder needs each token's bytes.
        self._bytes = [
            bytes([int(sp.id_to_piece(i)[3:5], 16)]) if sp.is_byte(i)
            else UNK.encode() if sp.is_unknown(i)
            else b"" if sp.is_control(i)
            else sp.id_to_piece(i).replace(_SP_SPACE, " ").encode()
            for i in range(sp.get_piece_size())
        ]
        self._newline_id = sp.piece_to_id("\n")
        self._literal_space_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in _SP_SPACE.encode()]

    @classmethod
    def learn(cls, pieces: Iterable[str], config: TokenizerConfig) -> SentencePieceTokenizer:
        return cls.from_texts(pieces, config.vocab_size, config.subword_model, config.subword_sample)

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        path = Path(directory) / MODEL_FILE
        try:
            tokenizer = cls(read_tokenizer_file(path))
        except (RuntimeError, ValueError):
            raise TextgenError(f"{path}: not a valid sentencepiece model") from None
        if not tokenizer.can_spell_anything():
            raise TextgenError(f"{path}: not a sentencepiece model written by textgen")
        return tokenizer

    @staticmethod
    def piece_end(text: str) -> int:
        return text.rfind("\n") + 1  # lines are encoded one by one

    @classmethod
    def numbering(cls, config: TokenizerConfig) -> TokenNumbering | None:
        return None  # pieces are chosen from the text's statistics, before any is encoded

    @classmethod
    def from_text(cls, text: str, vocab_size: int, model_type: str) -> SentencePieceTokenizer:
        return cls.from_texts([text], vocab_size, model_type)

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], vocab_size: int, model_type: str, sample_sentences: int = 0
    ) -> SentencePieceTokenizer:
        """Learn from pieces of text cut at line breaks (a big corpus a block at a time); with
        `sample_sentences`, sentencepiece learns from that many sentences drawn at random."""
        if model_type not in SUBWORD_MODELS:
            choices = ", ".join(SUBWORD_MODELS)
            raise TextgenError(f"unknown subword model {model_type!r}; use one of {choices}")
        # Training reads lines, so "\n" is a user-defined piece put back at
        # encode time; a literal "▁" would train as a space, so it splits too.
        seen = [False]

        def sentences() -> Iterable[str]:
            for text in texts:
                for line in text.split("\n"):
                    for part in line.split(_SP_SPACE):
                        for i in range(0, len(part), _SP_CHUNK):
                            seen[0] = True
                            yield part[i : i + _SP_CHUNK]

        # sentencepiece's own sampling (input_sentence_size) draws differently on every run, whatever
        # its seed; the same text must give the same vocabulary, or a cleared id cache, prepared again,
        # would no longer match the checkpoints trained from it. So the sample is drawn here.
        chosen = _sample(sentences(), sample_sentences) if 0 < sample_sentences < _ALL else sentences()
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(chosen),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size,
                byte_fallback=True,
                character_coverage=0.9995,  # rarer characters are spelled in bytes
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                user_defined_symbols="\n",
                hard_vocab_limit=False,  # a small text may not fill the vocabulary
                bos_id=-1,
                eos_id=-1,
                minloglevel=2,
            )
        except RuntimeError as e:
            if not seen[0]:
                raise TextgenError("the text has nothing but line breaks to learn subwords from") from None
            needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
            if needed:
                raise OptionError("vocab_size", f"of {vocab_size} is too small for this text: its characters "
                                                f"and the 256 byte pieces need at least {needed.group(1)}") from None
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise TextgenError(f"sentencepiece could not learn a vocabulary: {reason}") from None
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    @property
    def unk_id(self) -> int | None:
        return self._sp.unk_id()

    def encode(self, text: str) -> list[int]:
        if _SP_SPACE in text:
            parts = [self.encode(part) for part in text.split(_SP_SPACE)]
            ids = parts[0]
            for part in parts[1:]:
                ids += self._literal_space_ids + part
            return ids
        try:
            # Line by line lets sentencepiece use all cores on a big corpus.
            lines = self._sp.encode(text.split("\n"), out_type=int)
        except UnicodeEncodeError:
            raise TextgenError("the text holds characters that UTF-8 cannot write") from None
        ids = lines[0]
        for line in lines[1:]:
            ids.append(self._newline_id)
            ids += line
        return ids

    def encode_array(self, text: str) -> np.ndarray:
        return ids_array(self.encode(text), self.vocab_size)

    def decode(self, ids: Iterable[int]) -> str:
        pieces = map(self._bytes.__getitem__, checked_ids(ids, len(self._bytes)))
        return b"".join(pieces).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[checked_ids([token_id], len(self._bytes))[0]]

    def unknown_symbols(self, text: str) -> list[str]:
        return []  # byte fallback spells out anything

    def unseen(self, text: str) -> UnseenSymbols:
        return UnseenSymbols([], 0, 0)

    def encode_leniently(self, text: str, unknown: str) -> list[int]:
        return self.encode(text)

    def token_text(self, token_id: int) -> str:
        if self._sp.is_byte(checked_ids([token_id], len(self._bytes))[0]):
            return self._sp.id_to_piece(token_id)  # "<0xE4>": one byte is not text
        return self._bytes[token_id].decode("utf-8", errors="replace")

    def can_spell_anything(self) -> bool:
        """Whether all 256 byte pieces and the newline are there, as textgen trains them."""
        n_bytes = sum(map(self._sp.is_byte, range(self.vocab_size)))
        return n_bytes == 256 and self._sp.id_to_piece(self._newline_id) == "\n"

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_bytes(self._model)


def _sample(items: Iterable[str], size: int, seed: int = 0) -> list[str]:
    """`size` items drawn uniformly from `items` in one pass, the same ones every time (reservoir
    sampling with geometric skips, Li's algorithm L: a few random draws per item kept, not per item read)."""
    rng = random.Random(seed)
    stream = iter(items)
    reservoir = list(itertools.islice(stream, size))
    if len(reservoir) < size:
        return reservoir
    weight = math.exp(math.log(1.0 - rng.random()) / size)
    while True:
        skip = math.floor(math.log(1.0 - rng.random()) / math.log(1.0 - weight)) if weight < 1.0 else 0
        item = next(itertools.islice(stream, skip, None), None)
        if item is None:
            return reservoir
        reservoir[rng.randrange(size)] = item
        weight *= math.exp(math.log(1.0 - rng.random()) / size)
