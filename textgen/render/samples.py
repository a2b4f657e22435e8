"""Samples side by side: several samples drawn as columns in a terminal, growing as they are made."""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from textgen.render.console import console

MIN_COLUMN_WIDTH = 16  # narrower than this, side-by-side samples are unreadable


def fits_side_by_side(count: int) -> bool:
    """Whether `count` samples can be drawn as columns in this terminal."""
    return console.is_terminal and console.width // max(count, 1) >= MIN_COLUMN_WIDTH


class SideBySide:
    """Samples drawn as columns in a terminal, growing as they are made (Rich Live).

    While they grow, only the last screenful is drawn (Live cannot redraw what scrolled away);
    at the end the whole table is printed once.
    """

    def __init__(self, prompt: str, count: int, caption: str = "") -> None:
        self.texts = [prompt] * count
        self.finished = [False] * count
        self.caption = caption
        self.live: Live | None = None

    def __enter__(self) -> SideBySide:
        self.live = Live(_Tail(self), console=console, refresh_per_second=10, transient=True)
        self.live.start()
        return self

    def add(self, index: int, text: str, finished: bool) -> None:
        self.texts[index] += text
        self.finished[index] = self.finished[index] or finished

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        console.print(self.table())

    def table(self) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True, padding=(0, 1),
                      caption=self.caption or None, caption_justify="left")
        for index, done in enumerate(self.finished):
            table.add_column(f"sample {index + 1}" + (" ✓" if done else ""), ratio=1, overflow="fold")
        table.add_row(*(Text(text) for text in self.texts))
        return table


class _Tail:
    """The table's header and its last lines, cut to the terminal's height."""

    def __init__(self, samples: SideBySide) -> None:
        self.samples = samples

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.samples.table(), options.update(height=None), pad=False)
        room = max(4, console.height - 2)
        if len(lines) > room:
            lines = lines[:2] + [[Segment("…", Style(dim=True))]] + lines[len(lines) - (room - 3) :]
        for line in lines:
            yield from line
            yield Segment.line()

