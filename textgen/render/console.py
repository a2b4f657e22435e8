"""The consoles every view draws on, and the few lines that need no view of their own: an error,
a status note, a streamed piece of text, a figure as the tables show it."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.text import Text

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    error_console.print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


def print_note(message: str) -> None:
    """A status line on stderr, so it never mixes with text a script reads from stdout."""
    error_console.print(Text(message, style="dim"), soft_wrap=True)


def write_piece(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def figure(value: float | None, digits: int = 3) -> str:
    """A measured value with `digits` decimals; "-" where there is none (nothing held out, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
