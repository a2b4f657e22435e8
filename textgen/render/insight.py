"""The insight views in a terminal: memory reach and fading gradients as bar charts, the text
coloured by surprise, and the cells that track the text."""

from __future__ import annotations

import math

from rich import box
from rich.console import Group, RenderableType
from rich.style import Style
from rich.text import Text

from textgen.render.fitting import Bar, Column, FittedTable
from textgen.reports import CellReport, GradientFade, MemoryPoint, TokenSurprise

# Surprisal in bits, coloured from sure (green) to lost (red).
_SURPRISE_STEPS = [(1.0, "green"), (2.0, "bright_green"), (4.0, "yellow"), (6.0, "dark_orange"), (8.0, "red"),
                   (math.inf, "bold red")]


def memory_chart(series: dict[str, list[MemoryPoint]], width: int = 40) -> FittedTable:
    """Bits per character against how often the state is reset, one bar per point and model:
    where the bars stop shrinking, the model stops using older context."""
    columns = [Column("model", importance=3), Column("reset every", "right", importance=3),
               Column("bits/char", "right", importance=3), Column("", importance=2)]
    values = [point.bits_per_char for points in series.values() for point in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    rows: list[list[RenderableType]] = []
    for name, points in series.items():
        for index, point in enumerate(points):
            share = (point.bits_per_char - low) / (high - low) if high > low else 1.0
            rows.append([name if index == 0 else "", "never" if point.reset_every is None else f"{point.reset_every:,}",
                         f"{point.bits_per_char:.4f}", Bar(share, "cyan", longest=width)])
    return FittedTable(columns, rows, title="memory reach: bits per character with the state reset every k tokens")


def gradient_chart(series: dict[str, list[GradientFade]], width: int = 40) -> FittedTable:
    """The mean gradient norm of the loss with respect to each layer's state k steps back, as bars
    on a log scale (each decade the same length): a fading gradient shrinks the bars steadily."""
    columns = [Column("model", importance=3), Column("layer", "right", importance=3),
               Column("k", "right", importance=3), Column("norm", "right", importance=3), Column("", importance=2)]
    title = "fading gradients: |d loss_t / d h_(t-k)|, log scale"
    norms = [n for fades in series.values() for fade in fades for n in fade.norms if n > 0]
    if not norms:
        return FittedTable(columns, [], title=title)
    low, high = math.log10(min(norms)), math.log10(max(norms))
    rows: list[list[RenderableType]] = []
    for name, fades in series.items():
        for fade in fades:
            distances = sorted({0, *(2**i for i in range(12) if 2**i < len(fade.norms)), len(fade.norms) - 1})
            for index, k in enumerate(distances):
                norm = fade.norms[k]
                share = (math.log10(norm) - low) / (high - low) if norm > 0 and high > low else 0.0
                rows.append([name if fade.layer == 0 and index == 0 else "", str(fade.layer + 1) if index == 0 else "",
                             str(k), f"{norm:.2e}", Bar(share, "magenta", longest=width)])
    return FittedTable(columns, rows, title=title)


def surprise_text(tokens: list[TokenSurprise], first_token: str = "") -> Group:
    """The text with each token coloured by how many bits it cost the model, and a legend; the
    text's first token, which nothing predicts, stands uncoloured before them."""
    text = Text(first_token)
    for token in tokens:
        style = next(style for limit, style in _SURPRISE_STEPS if token.bits < limit)
        text.append(token.text, style=style)
    legend = Text("surprise in bits: ", style="dim")
    previous = 0.0
    for limit, style in _SURPRISE_STEPS:
        label = f"{previous:g}-{limit:g}" if math.isfinite(limit) else f"{previous:g}+"
        legend.append(f" {label} ", style=f"reverse {style}")
        legend.append(" ")
        previous = limit
    return Group(text, Text(), legend)


def cells_view(report: CellReport, name: str, shown_tokens: int = 600) -> Group:
    """The unit that tracks each feature best, a stretch of text coloured by the very best unit's
    activation (blue low, red high), and how often each gate sits saturated."""
    columns = [Column("feature", importance=3), Column("layer", "right", importance=3),
               Column("unit", "right", importance=3), Column("correlation", "right", importance=3)]
    rows = [[match.feature, str(match.layer + 1), str(match.unit), f"{match.correlation:+.3f}"]
            for match in report.best]
    parts: list[RenderableType] = [FittedTable(columns, rows, title=f"cells of {name} that track the text")]
    if report.best:
        best = report.best[0]
        parts += [Text(f"layer {best.layer + 1} unit {best.unit} ({best.feature}, r = {best.correlation:+.3f}), "
                       "blue low to red high:", style="dim"), _activation_text(report, shown_tokens)]
    if report.saturation:
        gates = [Column("gate", importance=3), Column("near 0", "right", importance=3),
                 Column("near 1", "right", importance=3)]
        shares = [[gate, f"{low:.1%}", f"{high:.1%}"] for gate, (low, high) in report.saturation.items()]
        parts.append(FittedTable(gates, shares, title="gate saturation: share of time near 0 / near 1",
                                 box=box.SIMPLE_HEAD))
    return Group(*parts)


def _activation_text(report: CellReport, shown_tokens: int) -> Text:
    """The first tokens, each on a background from blue (the unit's lowest) to red (its highest)."""
    values = report.activations[:shown_tokens]
    low, high = min(values), max(values)
    text = Text()
    for token, value in zip(report.tokens[:shown_tokens], values):
        share = (value - low) / (high - low) if high > low else 0.5
        red, blue = round(255 * share), round(255 * (1 - share))
        text.append(token, style=Style(color="black", bgcolor=f"rgb({red},{min(red, blue) + 64},{blue})"))
    return text
