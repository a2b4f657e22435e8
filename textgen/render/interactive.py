"""The views of interactive sampling: the settings, the likeliest next tokens, and the text so far
as a heading, with the characters a terminal does not show made visible."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from rich import box
from rich.table import Table

from textgen.config import SampleConfig
from textgen.render.fitting import Bar, Column, FittedTable
from textgen.reports import NextToken


def visible_token(text: str) -> str:
    """A token as a table cell: line breaks, tabs and leading or trailing spaces made visible."""
    shown = text.replace("\n", "↵").replace("\t", "⇥")
    if shown.strip(" ") != shown or not shown:
        shown = shown.replace(" ", "␣")
    return shown


def context_tail(context: str, size: int = 60) -> str:
    """The end of a text on one line, for a heading."""
    tail = context[-size:].replace("\n", "↵").replace("\t", "⇥") if context else "(nothing yet: a new paragraph)"
    return ("…" if len(context) > size else "") + tail


def next_tokens_table(candidates: Sequence[NextToken]) -> FittedTable:
    columns = [Column("#", "right", "bold", importance=3), Column("token", importance=3),
               Column("probability", "right", importance=2), Column("", "left", "cyan", importance=1)]
    rows = [[str(number), visible_token(candidate.text), f"{candidate.probability:.1%}",
             Bar(candidate.probability, "cyan", longest=20) if candidate.probability >= 0.025 else "▏"]
            for number, candidate in enumerate(candidates, start=1)]
    return FittedTable(columns, rows, show_edge=False, box=box.HEAVY_HEAD)


# How a setting's value reads where the bare value would not say enough. A field not named here
# is shown as its value: a new SampleConfig field appears in the table without an entry.
_WORDING: dict[str, Callable[[SampleConfig], str]] = {
    "length": lambda config: f"{config.length} characters",
    "temperature": lambda config: f"{config.temperature:g}" + (" (unused: greedy)" if config.greedy else ""),
    "top_k": lambda config: f"{config.top_k}" + (" (off)" if config.top_k == 0 else ""),
    "top_p": lambda config: f"{config.top_p:g}" + (" (off)" if config.top_p >= 1 else ""),
    "repetition_penalty": lambda config: f"{config.repetition_penalty:g}"
                                         + (" (off)" if config.repetition_penalty == 1 else ""),
    "seed": lambda config: "fresh each turn" if config.seed is None else str(config.seed),
}


def settings_table(config: SampleConfig) -> Table:
    """Every sampling setting, a row per field of SampleConfig, in the order the fields are declared."""
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    for field in dataclasses.fields(config):
        wording = _WORDING.get(field.name)
        table.add_row(field.name.replace("_", " "), wording(config) if wording else _plain(getattr(config, field.name)))
    return table


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(map(repr, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)
