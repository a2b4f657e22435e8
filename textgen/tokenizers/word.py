"""Words as tokens: words, numbers, punctuation marks and whitespace runs, each Chinese ideograph a
word of its own, optionally a leading space folded into the word (GPT-2 style); rare words are <unk>."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from textgen.config import OptionError, TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers.base import JSON_FILE, UNK, TokenList, UnseenSymbols, ids_dtype, read_token_list

# CJK ideographs (extension A, the unified block, compatibility ideographs,
# planes 2): Chinese has no spaces, so each ideograph is a word of its own.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
# A leading space folds into the token after it; a run of spaces gives its last
# space to the next token (`\s+(?= \S)`), so "a   b" -> "a", "  ", " b". Unlike
# GPT-2's `\s+(?!\S)`, a run ending in a newline stays whole ("\n\n" is one token).
_FOLDED = re.compile(rf" ?[{_CJK}]| ?[^\W\d_{_CJK}]+| ?\d+| ?\S|\s+(?= \S)|\s+")
_UNFOLDED = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d+|\S|\s+")


def pattern_for(fold_spaces: bool) -> re.Pattern[str]:
    """The regular expression whose matches are a word tokenizer's tokens."""
    return _FOLDED if fold_spaces else _UNFOLDED


class WordTokenizer(TokenList):
    """Words, numbers, punctuation marks and whitespace as tokens; <unk> is id 0."""

    kind = "word"
    learns_from_whole_text = False
    encodes_faster_in_workers = True

    def __init__(self, tokens: list[str], fold_spaces: bool = False) -> None:
        super().__init__(tokens)  # tokens[0] is UNK, which no text ever spells
        self._index.pop(UNK, None)
        self.fold_spaces = fold_spaces
        self._pattern = pattern_for(fold_spaces)
        self._space_id = self._index.get(" ")

    @classmethod
    def from_text(
        cls, text: str, max_vocab: int, min_count: int, fold_spaces: bool = False
    ) -> WordTokenizer:
        counts = Counter(pattern_for(fold_spaces).findall(text))
        return cls.from_counts(counts, max_vocab, min_count, fold_spaces, has_space=" " in text)

    @classmethod
    def learn(cls, pieces: Iterable[str], config: TokenizerConfig) -> WordTokenizer:
        """The vocabulary of the tokens of the pieces, counted a piece at a time."""
        pattern = pattern_for(config.fold_spaces)
        counts: Counter[str] = Counter()
        has_space = False
        for piece in pieces:
            counts.update(pattern.findall(piece))
            has_space = has_space or " " in piece
        return cls.from_counts(counts, config.max_vocab, config.min_count, config.fold_spaces, has_space)

    @classmethod
    def load(cls, directory: Path) -> WordTokenizer:
        data = read_token_list(directory, cls.kind)
        fold_spaces = data.get("fold_spaces", False)
        if data["tokens"][0] != UNK or not isinstance(fold_spaces, bool):
            raise TextgenError(f"{Path(directory) / JSON_FILE}: a word vocabulary starts with {UNK!r}, "
                               f"fold_spaces is a bool")
        return cls(data["tokens"], fold_spaces)

    @staticmethod
    def piece_end(text: str) -> int:
        """Just after a line break followed by something other than whitespace: no token (a word,
        a number, a mark or a whitespace run) can straddle it."""
        end = len(text)
        while (end := text.rfind("\n", 0, end)) >= 0:
            if end + 1 < len(text) and not text[end + 1].isspace():
                return end + 1
        return 0

    @classmethod
    def numbering(cls, config: TokenizerConfig) -> FirstSeenNumbering | None:
        """Without folded spaces a token's id depends on that token alone, so a big corpus can be
        split into tokens before its vocabulary is known, and renumbered after."""
        return None if config.fold_spaces else FirstSeenNumbering(config)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], max_vocab: int, min_count: int, fold_spaces: bool, has_space: bool
    ) -> WordTokenizer:
        """The vocabulary of token counts made with `pattern_for(fold_spaces)` (however they were
        counted: at once, or a block at a time for a big corpus); `has_space`: the text holds a " "."""
        if max_vocab < 2:
            raise OptionError("max_vocab", f"must be at least 2 (<unk> and a word), not {max_vocab}")
        # A lone " " is rare once spaces fold into words, yet encode needs it to
        # keep the space of an unknown " word"; so it is kept, right after <unk>.
        specials = [UNK, " "] if fold_spaces and has_space else [UNK]
        # Ties go by the token itself so the same text always gives the same ids.
        ranked = sorted(
            (t for t, n in counts.items() if n >= min_count and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if not ranked and len(specials) == 1:
            # A vocabulary of <unk> alone trains a model that can only ever write <unk>.
            raise OptionError("min_count", f"of {min_count} keeps no token of the text, so the vocabulary would "
                                           f"hold nothing but {UNK}; lower it")
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
        return list(dict.fromkeys(map(self.word_of, self.unknown_tokens(text))))

    def unseen(self, text: str) -> UnseenSymbols:
        words = list(map(self.word_of, self.unknown_tokens(text)))  # one pass over the text
        return UnseenSymbols(list(dict.fromkeys(words)), len(words), sum(map(len, words)))

    def encode_leniently(self, text: str, unknown: str) -> list[int]:
        """Unseen words dropped ("skip") or left as <unk> ("replace"), the token learnt for rare words."""
        ids = self.encode(text)
        return [i for i in ids if i != 0] if unknown == "skip" else ids

    def unknown_tokens(self, text: str) -> list[str]:
        """Every token of `text` outside the vocabulary, as often as it occurs."""
        return [t for t in self.split(text) if t not in self._index]

    def word_of(self, token: str) -> str:
        """An unknown token as the word it spells: without the space folded into it, which encode
        keeps as a token of its own."""
        return token[1:] if self.fold_spaces and len(token) > 1 and token[0] == " " else token

    def _with_tokens(self, tokens: list[str]) -> WordTokenizer:
        return WordTokenizer(tokens, self.fold_spaces)

    def _extra_json(self) -> dict[str, object]:
        return {"fold_spaces": self.fold_spaces}


class FirstSeenNumbering:
    """Unfolded word tokens numbered in order of first appearance, so that a corpus too big to
    read twice is split into tokens once; `vocabulary` maps the numbers to ids once the training
    part's counts are known."""

    def __init__(self, config: TokenizerConfig) -> None:
        self._config = config
        self._numbers: dict[str, int] = {}

    def number(self, text: str) -> np.ndarray:
        tokens = _UNFOLDED.findall(text)
        numbers = list(map(self._numbers.get, tokens))  # after the first blocks nearly every token is known
        if None in numbers:
            numbers = [self._numbers.setdefault(token, len(self._numbers)) for token in tokens]
        return np.asarray(numbers, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._numbers)

    def vocabulary(self, counts: np.ndarray) -> tuple[WordTokenizer, np.ndarray]:
        """The tokenizer learnt from `counts` (how often each number occurs in the training part,
        indexed by number) and each number's id in it: <unk>, 0, for a token it left out."""
        tokens = list(self._numbers)
        seen = {tokens[number]: int(counts[number]) for number in np.flatnonzero(counts)}
        tokenizer = WordTokenizer.from_counts(seen, self._config.max_vocab, self._config.min_count, False,
                                              has_space=False)
        ids = map(tokenizer._index.get, tokens, [0] * len(tokens))
        return tokenizer, np.fromiter(ids, dtype=ids_dtype(tokenizer.vocab_size), count=len(tokens))
