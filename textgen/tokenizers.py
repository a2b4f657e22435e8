"""The only code that maps text to ids and ids back to text.

Three kinds share one protocol: `char` (one id per Unicode code point), `word`
(words, numbers, punctuation marks and whitespace runs; optionally a leading space folded
into the word, GPT-2 style) and `subword` (a
sentencepiece model trained in memory, with byte fallback so nothing is ever
unknown). Each kind saves its vocabulary as its own small file in a checkpoint
directory; loading reads only JSON or a sentencepiece proto, never code.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import sentencepiece as spm

from textgen.config import SUBWORD_MODELS, TOKENIZER_KINDS, TokenizerConfig
from textgen.errors import TextgenError

JSON_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"
UNK = "<unk>"

# CJK ideographs (extension A, the unified block, compatibility ideographs,
# planes 2): Chinese has no spaces, so each ideograph is a word of its own.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
# A leading space folds into the token after it; a run of spaces gives its last
# space to the next token (`\s+(?= \S)`), so "a   b" -> "a", "  ", " b". Unlike
# GPT-2's `\s+(?!\S)`, a run ending in a newline stays whole ("\n\n" is one token).
_FOLDED = re.compile(rf" ?[{_CJK}]| ?[^\W\d_{_CJK}]+| ?\d+| ?\S|\s+(?= \S)|\s+")
_UNFOLDED = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d+|\S|\s+")

# sentencepiece shows a space as this character inside its pieces.
_SP_SPACE = "\u2581"
# sentencepiece skips training sentences over 4192 bytes; 1000 code points are
# at most 4000 bytes, so long lines are cut into chunks this long instead.
_SP_CHUNK = 1000


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


def _checked_ids(ids: Iterable[int], size: int) -> list[int]:
    ids = list(ids)
    # A negative id would silently index from the end of the vocabulary.
    if ids and (min(ids) < 0 or max(ids) >= size):
        bad = next(i for i in ids if not 0 <= i < size)
        raise TextgenError(f"token id {int(bad)} is outside the vocabulary of {size} tokens")
    return ids


class _TokenList:
    """A vocabulary that is a list of strings: decoding is concatenation."""

    kind: str

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(self._tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(map(self._tokens.__getitem__, _checked_ids(ids, len(self._tokens))))

    def token_text(self, token_id: int) -> str:
        return self._tokens[_checked_ids([token_id], len(self._tokens))[0]]

    def save(self, directory: Path) -> None:
        data = {"kind": self.kind, "tokens": self._tokens, **self._extra_json()}
        text = json.dumps(data, ensure_ascii=False, indent=1)
        (Path(directory) / JSON_FILE).write_text(text + "\n", encoding="utf-8")

    def _extra_json(self) -> dict[str, object]:
        return {}


class CharTokenizer(_TokenList):
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


class WordTokenizer(_TokenList):
    """Words, numbers, punctuation marks and whitespace as tokens; <unk> is id 0."""

    kind = "word"

    def __init__(self, tokens: list[str], fold_spaces: bool = False) -> None:
        super().__init__(tokens)  # tokens[0] is UNK, which no text ever spells
        self._index.pop(UNK, None)
        self.fold_spaces = fold_spaces
        self._pattern = _FOLDED if fold_spaces else _UNFOLDED
        self._space_id = self._index.get(" ")

    @classmethod
    def from_text(
        cls, text: str, max_vocab: int, min_count: int, fold_spaces: bool = False
    ) -> WordTokenizer:
        if max_vocab < 2:
            raise TextgenError(f"max_vocab must be at least 2 (<unk> and a word), not {max_vocab}")
        counts = Counter((_FOLDED if fold_spaces else _UNFOLDED).findall(text))
        # A lone " " is rare once spaces fold into words, yet encode needs it to
        # keep the space of an unknown " word"; so it is kept, right after <unk>.
        specials = [UNK, " "] if fold_spaces and " " in text else [UNK]
        # Ties go by the token itself so the same text always gives the same ids.
        ranked = sorted(
            (t for t, n in counts.items() if n >= min_count and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if not ranked and len(specials) == 1:
            # A vocabulary of <unk> alone trains a model that can only ever write <unk>.
            raise TextgenError(f"no token occurs at least {min_count} times in the text, so the vocabulary "
                               f"would hold nothing but {UNK}; lower --min-count")
        return cls((specials + ranked)[:max_vocab], fold_spaces)

    def split(self, text: str) -> list[str]:
        """The token strings of `text`; joined together they give `text` back."""
        return self._pattern.findall(text)

    @property
    def unk_id(self) -> int | None:
        return 0

    def encode(self, text: str) -> list[int]:
        tokens = self.split(text)
        ids = list(map(self._index.get, tokens, [0] * len(tokens)))
        if 0 not in ids or not self.fold_spaces or self._space_id is None:
            return ids
        # An unknown " word" keeps its space as a token, so the layout survives.
        out: list[int] = []
        for token, token_id in zip(tokens, ids):
            if token_id == 0 and len(token) > 1 and token[0] == " ":
                out.append(self._space_id)
            out.append(token_id)
        return out

    def unknown_symbols(self, text: str) -> list[str]:
        unknown = (t for t in dict.fromkeys(self.split(text)) if t not in self._index)
        if not self.fold_spaces:
            return list(unknown)
        return list(dict.fromkeys(t[1:] if len(t) > 1 and t[0] == " " else t for t in unknown))

    def _extra_json(self) -> dict[str, object]:
        return {"fold_spaces": self.fold_spaces}


class SentencePieceTokenizer:
    """Subword pieces from a sentencepiece model, falling back to UTF-8 bytes."""

    kind = "subword"

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
    def from_text(cls, text: str, vocab_size: int, model_type: str) -> SentencePieceTokenizer:
        if model_type not in SUBWORD_MODELS:
            choices = ", ".join(SUBWORD_MODELS)
            raise TextgenError(f"unknown subword model {model_type!r}; use one of {choices}")
        # Training reads lines, so "\n" is a user-defined piece put back at
        # encode time; a literal "▁" would train as a space, so it splits too.
        sentences = [
            part[i : i + _SP_CHUNK]
            for line in text.split("\n")
            for part in line.split(_SP_SPACE)
            for i in range(0, len(part), _SP_CHUNK)
        ]
        if not sentences:
            raise TextgenError("the text has nothing but line breaks to learn subwords from")
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
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
            needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
            if needed:
                raise TextgenError(
                    f"a subword vocab_size of {vocab_size} is too small for this text: its "
                    f"characters and the 256 byte pieces need at least {needed.group(1)}"
                ) from None
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

    def decode(self, ids: Iterable[int]) -> str:
        pieces = map(self._bytes.__getitem__, _checked_ids(ids, len(self._bytes)))
        return b"".join(pieces).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[_checked_ids([token_id], len(self._bytes))[0]]

    def unknown_symbols(self, text: str) -> list[str]:
        return []  # byte fallback spells out anything

    def token_text(self, token_id: int) -> str:
        if self._sp.is_byte(_checked_ids([token_id], len(self._bytes))[0]):
            return self._sp.id_to_piece(token_id)  # "<0xE4>": one byte is not text
        return self._bytes[token_id].decode("utf-8", errors="replace")

    def can_spell_anything(self) -> bool:
        """Whether all 256 byte pieces and the newline are there, as textgen trains them."""
        n_bytes = sum(map(self._sp.is_byte, range(self.vocab_size)))
        return n_bytes == 256 and self._sp.id_to_piece(self._newline_id) == "\n"

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_bytes(self._model)


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

    def decode(self, ids: Iterable[int]) -> str:
        ids = _checked_ids(ids, self.vocab_size)
        return self.base.decode(i for i in ids if i != self.end_id)

    def unknown_symbols(self, text: str) -> list[str]:
        return self.base.unknown_symbols(text)

    def token_text(self, token_id: int) -> str:
        return self.END if token_id == self.end_id else self.base.token_text(token_id)

    def save(self, directory: Path) -> None:
        self.base.save(directory)


def end_marker(tokenizer: Tokenizer) -> int | None:
    """The id that ends a document, for tokenizers of document-mode models; None otherwise."""
    return tokenizer.end_id if isinstance(tokenizer, DocumentTokenizer) else None


class StreamDecoder:
    """Turns ids into text one token at a time, as a sampler makes them.

    Subword byte pieces are held back until they complete a UTF-8 character;
    char and word tokens are whole text already.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        base = tokenizer.base if isinstance(tokenizer, DocumentTokenizer) else tokenizer
        self._subword = base if isinstance(base, SentencePieceTokenizer) else None
        self._end_id = end_marker(tokenizer)
        # The incremental decoder gives the same replacement characters as a
        # one-shot decode, so feed() pieces always add up to decode().
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A token list decodes by lookup; going through decode() would cost as much again per token.
        self._texts = base._tokens if isinstance(base, _TokenList) else None

    def feed(self, token_id: int) -> str:
        if token_id == self._end_id:
            return ""
        if self._texts is not None and 0 <= token_id < len(self._texts):
            return self._texts[token_id]
        if self._subword is None:
            return self._tokenizer.decode([token_id])
        return self._utf8.decode(self._subword.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# Typographic marks that NFKC leaves alone, and the plain marks a model has more likely seen.
_PLAIN_MARKS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                              "\u2014": "-", "\u00a0": " ", "\u2212": "-"})


def encode_leniently(tokenizer: Tokenizer, text: str, unknown: str) -> list[int]:
    """`text` as ids, with the symbols the model never saw dropped (`skip`) or stood in for (`replace`).

    A word model replaces an unseen word with <unk>, the token it learnt for rare words. A char
    model replaces an unseen character with a plain form it knows (é -> e, ’ -> ', … -> ...),
    or the other case (A -> a), else with a space, else drops it. A subword model can spell anything, so nothing changes.
    """
    if unknown not in ("skip", "replace"):
        raise TextgenError(f"unknown symbols must be skipped or replaced, not {unknown!r}")
    if isinstance(tokenizer, DocumentTokenizer):
        return encode_leniently(tokenizer.base, text, unknown)
    if isinstance(tokenizer, CharTokenizer):
        if unknown == "skip":
            return tokenizer.encode("".join(c for c in text if not tokenizer.unknown_symbols(c)))
        return tokenizer.encode("".join(_known_stand_in(tokenizer, c) for c in text))
    ids = tokenizer.encode(text)
    unk = tokenizer.unk_id
    if unknown == "skip" and unk is not None and not isinstance(tokenizer, SentencePieceTokenizer):
        ids = [i for i in ids if i != unk]
    return ids


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


def unseen_symbols(tokenizer: Tokenizer, text: str) -> UnseenSymbols:
    """Count the symbols of `text` outside the model's vocabulary, and the characters they cover."""
    if isinstance(tokenizer, DocumentTokenizer):
        return unseen_symbols(tokenizer.base, text)
    if isinstance(tokenizer, CharTokenizer):
        symbols = tokenizer.unknown_symbols(text)
        occurrences = sum(map(text.count, symbols))
        return UnseenSymbols(symbols, occurrences, occurrences)
    if isinstance(tokenizer, WordTokenizer):
        unknown = [t for t in tokenizer.split(text) if t not in tokenizer._index]
        covered = sum(len(t) - (tokenizer.fold_spaces and len(t) > 1 and t[0] == " ") for t in unknown)
        return UnseenSymbols(tokenizer.unknown_symbols(text), len(unknown), covered)
    return UnseenSymbols([], 0, 0)


def _known_stand_in(tokenizer: CharTokenizer, char: str) -> str:
    if not tokenizer.unknown_symbols(char):
        return char
    plain = unicodedata.normalize("NFKC", char).translate(_PLAIN_MARKS)
    plain = "".join(c for c in unicodedata.normalize("NFKD", plain) if not unicodedata.combining(c))
    for candidate in (plain, plain.lower(), plain.upper(), " "):
        if candidate and not tokenizer.unknown_symbols(candidate):
            return candidate
    return ""


def describe_symbols(symbols: list[str], limit: int = 10) -> str:
    """'a', '\\n' and 3 more: repr() makes a newline, a tab or a space visible in a message."""
    more = f" and {len(symbols) - limit} more" if len(symbols) > limit else ""
    return ", ".join(map(repr, symbols[:limit])) + more


def _check_kind(kind: str) -> None:
    if kind not in TOKENIZER_KINDS:
        choices = ", ".join(TOKENIZER_KINDS)
        raise TextgenError(f"unknown tokenizer kind {kind!r}; use one of {choices}")


def build_tokenizer(config: TokenizerConfig, text: str) -> Tokenizer:
    """Learn a vocabulary of `config.kind` from `text` (with the end marker in document mode)."""
    tokenizer = _build_base(config, text)
    return DocumentTokenizer(tokenizer, config.documents) if config.documents != "none" else tokenizer


def load_tokenizer(directory: Path, config: TokenizerConfig) -> Tokenizer:
    """Read back what `save` wrote into `directory` for a tokenizer of `config.kind`."""
    tokenizer = _load_base(directory, config)
    return DocumentTokenizer(tokenizer, config.documents) if config.documents != "none" else tokenizer


def _build_base(config: TokenizerConfig, text: str) -> Tokenizer:
    _check_kind(config.kind)
    if not text:
        raise TextgenError("cannot learn a vocabulary from empty text")
    if config.kind == "char":
        return CharTokenizer.from_text(text)
    if config.kind == "word":
        return WordTokenizer.from_text(text, config.max_vocab, config.min_count, config.fold_spaces)
    return SentencePieceTokenizer.from_text(text, config.vocab_size, config.subword_model)


def _load_base(directory: Path, config: TokenizerConfig) -> Tokenizer:
    _check_kind(config.kind)
    if config.kind == "subword":
        path = Path(directory) / MODEL_FILE
        try:
            tokenizer = SentencePieceTokenizer(_read_bytes(path))
        except (RuntimeError, ValueError):
            raise TextgenError(f"{path}: not a valid sentencepiece model") from None
        if not tokenizer.can_spell_anything():
            raise TextgenError(f"{path}: not a sentencepiece model written by textgen")
        return tokenizer

    path = Path(directory) / JSON_FILE
    try:
        data = json.loads(_read_bytes(path))
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


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextgenError(f"{path}: tokenizer file is missing") from None
    except OSError as e:
        raise TextgenError(f"{path}: cannot read the tokenizer file ({e.strerror})") from None
    if not data:
        raise TextgenError(f"{path}: tokenizer file is empty")
    return data
