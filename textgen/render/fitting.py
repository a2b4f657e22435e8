"""Tables that stay readable at any terminal width, from 60 columns to 200.

A table knows its columns' importance. Drawn in a narrow terminal, it leaves out the least
important columns until every word of every cell fits on one line, and says which it left out;
what remains wraps at spaces instead of being cut short with "…". Bars stretch to the room left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box as boxes
from rich.box import Box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

# Measured as if the terminal had no edge, so a cell's minimum is its longest word, uncut.
_UNBOUNDED = 10_000
_PADDING = 2  # one space each side of a cell


@dataclass(frozen=True)
class Column:
    header: str
    justify: JustifyMethod = "left"
    style: str | None = None
    # Columns of lower importance are left out first when the terminal is narrow; among equals,
    # the rightmost goes first. A table never leaves out its most important column.
    importance: int = 0


class Bar:
    """A bar of `share` (0 to 1) of the width its column is given, at least one block, at most
    `longest` blocks: the same share draws the same length in every row of a column."""

    def __init__(self, share: float, style: str = "cyan", longest: int = 40) -> None:
        self.share = min(1.0, max(0.0, share))
        self.style = Style.parse(style)
        self.longest = longest

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, min(self.longest, options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        room = min(self.longest, options.max_width)
        yield Segment("█" * max(1, round(self.share * room)), self.style)


class FittedTable:
    """A Rich table drawn to the width it is given: see the module's docstring."""

    def __init__(self, columns: Sequence[Column], rows: Sequence[Sequence[RenderableType]], *,
                 title: str | None = None, show_header: bool = True, box: Box | None = boxes.SIMPLE_HEAD,
                 show_edge: bool = True) -> None:
        self.columns = list(columns)
        # Plain strings become Text, so a name with [brackets] is shown as written, not read as markup.
        self.rows = [[Text(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
        self.title, self.show_header, self.box, self.show_edge = title, show_header, box, show_edge

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(console, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(console, options.max_width))

    def table(self, console: Console, width: int) -> Table:
        """The Rich table for `width` columns of terminal."""
        measured = [self._measure(console, index) for index in range(len(self.columns))]
        shown = list(range(len(self.columns)))
        while len(shown) > 1 and sum(measured[i].minimum for i in shown) + self._borders(len(shown)) > width:
            shown.remove(min(reversed(shown), key=lambda i: self.columns[i].importance))
        left_out = [column.header for i, column in enumerate(self.columns) if i not in shown and column.header]
        widths = _share_out([measured[i] for i in shown], width - self._borders(len(shown)))
        table = Table(title=self.title, title_justify="left", show_header=self.show_header, box=self.box,
                      show_edge=self.show_edge, caption_justify="left", caption_style="dim",
                      caption=f"left out at this width: {', '.join(left_out)}" if left_out else None)
        for index, content_width in zip(shown, widths):
            column = self.columns[index]
            table.add_column(column.header, justify=column.justify, style=column.style, width=content_width,
                             overflow="fold")
        for row in self.rows:
            table.add_row(*(row[index] for index in shown))
        return table

    def _measure(self, console: Console, index: int) -> Measurement:
        """The column's narrowest and widest content, padding included."""
        options = console.options.update_width(_UNBOUNDED)
        cells = [Text(self.columns[index].header)] if self.show_header else []
        cells += [row[index] for row in self.rows]
        sizes = [Measurement.get(console, options, cell) for cell in cells] or [Measurement(0, 0)]
        narrowest, widest = max(size.minimum for size in sizes), max(size.maximum for size in sizes)
        return Measurement(narrowest + _PADDING, widest + _PADDING)

    def _borders(self, columns: int) -> int:
        """Characters the box takes on a line: a rule between columns, and the two edges."""
        if self.box is None:
            return 0
        return columns - 1 + (2 if self.show_edge else 0)


def _share_out(columns: list[Measurement], room: int) -> list[int | None]:
    """Content widths: each column its narrowest, then the room left given to the columns that
    need least of it to be whole, so short names and figures stay on one line and only the
    longest text wraps. None (Rich's own choice, long words folded) when even the narrowest do
    not fit."""
    if sum(c.minimum for c in columns) > room:
        return [None] * len(columns)
    widths = [c.minimum for c in columns]
    spare = room - sum(widths)
    for index in sorted(range(len(columns)), key=lambda i: columns[i].maximum - columns[i].minimum):
        grown = min(spare, columns[index].maximum - widths[index])
        widths[index] += grown
        spare -= grown
    return [width - _PADDING for width in widths]
