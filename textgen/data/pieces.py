"""A big corpus as pieces of text that tokenize as the whole does: each piece is cut where no token
(or, with --documents, no document) can straddle the cut, always at the end of a file, and exactly
where the training part ends, so that preparing it a block at a time gives the ids, the vocabulary
and the split that reading it whole would give."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from textgen.data.reading import CorpusFiles, read_blocks
from textgen.tokenizers import tokenizer_kind

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n\s*")  # as data.split cuts paragraphs


@dataclass(frozen=True)
class Piece:
    part: str  # "train" or "val"
    text: str
    opens_file: bool  # the first piece of a file in this part
    done: int  # bytes read so far, in all files


@dataclass
class Split:
    """Where the training part ends, in characters. With documents it moves on, the first time the
    text is read, to the end of the document it falls in; `settled` then keeps it there."""

    at: int
    documents: str = "none"
    settled: bool = False


def pieces(files: CorpusFiles, split: Split, cut: Callable[[str], int]) -> Iterator[Piece]:
    position = 0  # characters yielded so far
    for blocks in _by_file(files):
        carry, opens = "", True
        for block, done, last in blocks:
            text, carry = carry + block, ""
            if position <= split.at <= position + len(text):
                point = split.at - position if split.settled or split.documents == "none" else \
                    _document_end(text, split.at - position, split.documents)
                if point is None and not last:
                    carry = text  # the document goes on in the next block
                    continue
                point = len(text) if point is None else point
                split.at, split.settled = position + point, True
                if point:
                    yield Piece("train", text[:point], opens, done)
                    opens = False
                position, text = position + point, text[point:]
            end = len(text) if last else cut(text)
            if end:
                yield Piece("train" if position < split.at else "val", text[:end], opens, done)
                position += end
                opens = False
            carry = text[end:]


def _document_end(text: str, at: int, documents: str) -> int | None:
    """The first document boundary at or after `at` within `text` (0 is one: pieces start at one),
    or None when the document goes on past the text."""
    if at == 0:
        return 0
    if documents == "lines":
        newline = text.find("\n", at - 1)
        return newline + 1 if newline >= 0 else None
    match = _PARAGRAPH_BREAK.search(text, at - 1)
    return match.end() if match and match.end() < len(text) else None


def _by_file(files: CorpusFiles) -> Iterator[Iterator[tuple[str, int, bool]]]:
    """Each file's blocks as (text, bytes read so far, whether it is the file's last block)."""
    blocks = read_blocks(files)
    upcoming = next(blocks, None)

    def one_file(path: object) -> Iterator[tuple[str, int, bool]]:
        nonlocal upcoming
        while upcoming is not None and upcoming[0] == path:
            _, text, done = upcoming
            upcoming = next(blocks, None)
            yield text, done, upcoming is None or upcoming[0] != path

    while upcoming is not None:
        path = upcoming[0]
        yield one_file(path)
        while upcoming is not None and upcoming[0] == path:  # what the consumer left unread
            upcoming = next(blocks, None)


# --- where a piece may end -----------------------------------------------------------------------


def cut_for(kind: str, documents: str) -> Callable[[str], int]:
    """Where a piece of text may end: after a whole document, or, in one stream, where no token of
    the tokenizer of `kind` straddles the cut (its kind says where)."""
    if documents == "lines":
        return line_cut
    if documents == "blank-lines":
        return paragraph_cut
    return tokenizer_kind(kind).piece_end


def line_cut(text: str) -> int:
    """Just after the last line break: a line is a document."""
    return text.rfind("\n") + 1


def paragraph_cut(text: str) -> int:
    """Just after the last paragraph break that is followed by text (one at the very end may still
    grow with the next block's blank lines)."""
    end = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        if match.end() < len(text):
            end = match.end()
    return end

