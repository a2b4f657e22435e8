"""Cutting a text in two for training and validation, and a document corpus into its documents.

`--documents lines` makes every non-empty line a document; `--documents blank-lines` every
paragraph. A split never cuts a document in two.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from textgen.config import DOCUMENT_MODES, OptionError
from textgen.errors import TextgenError

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n\s*")


def split_text(text: str, val_fraction: float, documents: str = "none") -> tuple[str, str]:
    """Split into (train, validation): the first characters train, the last `val_fraction` validate.

    Train gets floor(n * (1 - f)) characters, nanoGPT's int(n * 0.9), so tiny Shakespeare's
    figures compare with published ones; with `documents`, the split moves on to the end of the
    document it falls in.
    """
    if not 0.0 <= val_fraction <= 0.5:  # also rejects NaN
        raise TextgenError(f"validation fraction must be between 0 and 0.5, got {val_fraction}")
    # Work on the decimal the user wrote (0.1 is exactly 1/10 here, not the nearest double),
    # so the split never lands a character off from the same sum done by hand.
    train_share = 1 - Fraction(str(float(val_fraction)))
    split = math.floor(len(text) * train_share)
    if val_fraction > 0:
        split = document_split_point(text, split, documents)
    return text[:split], text[split:]


def split_documents(text: str, mode: str) -> list[str]:
    """The documents of `text`: its non-blank lines, or its paragraphs, with outer whitespace kept
    inside each (only the line break that separates them goes)."""
    if mode == "lines":
        pieces = text.split("\n")
        return [p.removesuffix("\r") for p in pieces if p.strip()]
    if mode == "blank-lines":
        return [p.strip("\n\r") for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    raise OptionError("documents", f"must be one of {', '.join(DOCUMENT_MODES)}, not {mode!r}")


def document_split_point(text: str, split: int, mode: str) -> int:
    """Move a train/validation split forward to the next document boundary, so no document is cut."""
    if mode == "none" or split >= len(text):
        return split
    if mode == "lines":
        newline = text.find("\n", split - 1 if split > 0 else 0)
        return len(text) if newline < 0 else newline + 1
    match = _PARAGRAPH_BREAK.search(text, max(0, split - 1))
    return len(text) if match is None else match.end()
