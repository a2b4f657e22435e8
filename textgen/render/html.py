"""The report page of `textgen evaluate --html`: one self-contained file, nothing fetched from the
network, its charts inline SVG and its tooltips plain CSS (no script at all). Filled from plain
data through a Jinja2 template (templates/report.html.j2), which escapes every token of the
user's text."""

from __future__ import annotations

import math
from pathlib import Path

import jinja2
import markupsafe

from textgen.checkpoint.records import MetricsRow
from textgen.reports import CellReport, GradientFade, MemoryPoint, ModelRow, TokenSurprise

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)
# Surprisal in bits and its colour, from sure to lost (the terminal's steps, as CSS colours).
_STEPS = [(1.0, "#b7e4b0"), (2.0, "#dcefb5"), (4.0, "#fbe7a1"), (6.0, "#f9c58d"), (8.0, "#f4978e"),
          (math.inf, "#e05561")]
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def report_page(*, title: str, subtitle: str, text_name: str, rows: list[ModelRow], model_name: str,
                first_token: str, tokens: list[TokenSurprise], tokens_cut: bool, metrics: list[MetricsRow],
                memory: dict[str, list[MemoryPoint]], gradients: dict[str, list[GradientFade]],
                cells: CellReport | None) -> str:
    """The page's HTML. `first_token` is the text's first token, which nothing before it predicts,
    and `tokens` the surprise of each token after it; `memory` and `gradients` are per model name."""
    charts = []
    if metrics:
        series = {"training loss": [(row.step, row.train_loss) for row in metrics if _finite(row.train_loss)],
                  "validation loss": [(row.step, row.val_loss) for row in metrics if _finite(row.val_loss)]}
        charts.append({"title": f"Training curves ({model_name})", "svg": line_chart(series, "step", "nats/token"),
                       "note": "from the checkpoint's metrics.jsonl"})
    if memory:
        series = {name: [(index, point.bits_per_char) for index, point in enumerate(points)]
                  for name, points in memory.items()}
        labels = ["never" if p.reset_every is None else f"{p.reset_every:,}" for p in next(iter(memory.values()))]
        charts.append({"title": "Memory reach", "svg": line_chart(series, "state reset every k tokens", "bits/char",
                                                                   x_labels=labels),
                       "note": "where the line stops falling, the model stops using older context"})
    if gradients:
        series = {f"{name}, layer {fade.layer + 1}": [(k, norm) for k, norm in enumerate(fade.norms) if norm > 0]
                  for name, fades in gradients.items() for fade in fades}
        charts.append({"title": "Fading gradients", "svg": line_chart(series, "k (steps back)",
                                                                       "|d loss_t / d h_(t-k)|", log_y=True),
                       "note": "mean norm over positions, log scale: the vanishing-gradient picture"})
    legend, previous = [], 0.0
    for limit, colour in _STEPS:
        legend.append({"label": f"{previous:g}–{limit:g}" if math.isfinite(limit) else f"{previous:g}+",
                       "colour": colour})
        previous = limit
    # The first token is shown uncoloured, so the text reads whole from its first character.
    shown = [{"text": first_token, "colour": None, "tip": "the first token: nothing before it predicts it"}]
    shown += [{"text": token.text, "colour": _colour(token.bits), "tip": _tip(token)} for token in tokens]
    cells_data = None
    if cells is not None:
        cells_data = {"best": cells.best, "saturation": cells.saturation}
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, text_name=text_name, rows=rows, model_name=model_name, tokens=shown,
        tokens_cut=tokens_cut, legend=legend, charts=charts, cells=cells_data,
    )


def line_chart(series: dict[str, list[tuple[float, float]]], x_title: str, y_title: str, log_y: bool = False,
               x_labels: list[str] | None = None, width: int = 640, height: int = 280) -> str:
    """An SVG line chart with a legend; each series a polyline with its points marked."""
    points = [(x, y) for values in series.values() for x, y in values]
    if not points:
        return "<p class='note'>nothing to draw</p>"
    ys = [math.log10(y) if log_y else y for _, y in points]
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    y_low, y_high = min(ys), max(ys)
    if y_high - y_low < 1e-12:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    left, right, top, bottom = 70, 20, 15, 45

    def place(x: float, y: float) -> tuple[float, float]:
        y = math.log10(y) if log_y else y
        across = (x - x_low) / (x_high - x_low) if x_high > x_low else 0.5
        return (left + across * (width - left - right),
                top + (1 - (y - y_low) / (y_high - y_low)) * (height - top - bottom))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(series)}" '
             f'role="img" aria-label="{_attribute(y_title)} against {_attribute(x_title)}">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>']
    for fraction in (0.0, 0.5, 1.0):
        value = y_low + fraction * (y_high - y_low)
        label = f"{10 ** value:.2g}" if log_y else f"{value:.3g}"
        y = top + (1 - fraction) * (height - top - bottom)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    if x_labels:
        for index, label in enumerate(x_labels):
            x, _ = place(index, 10 ** y_low if log_y else y_low)
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{_attribute(label)}</text>')
    else:
        for value in (x_low, x_high):
            x, _ = place(value, 10 ** y_low if log_y else y_low)
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{value:,.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
                 f'{_attribute(x_title)}</text>')
    parts.append(f'<text x="14" y="{top + (height - top - bottom) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + (height - top - bottom) / 2:.0f})">{_attribute(y_title)}</text>')
    for index, (name, values) in enumerate(series.items()):
        colour = _PALETTE[index % len(_PALETTE)]
        placed = [place(x, y) for x, y in sorted(values)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in placed)}"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{colour}"/>' for x, y in placed]
        parts.append(f'<text x="{left}" y="{height + 14 + 18 * index}" fill="{colour}" style="fill: {colour}">'
                     f'■ {_attribute(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _colour(bits: float) -> str:
    return next(colour for limit, colour in _STEPS if bits < limit)


def _tip(token: TokenSurprise) -> str:
    lines = [f"{token.bits:.2f} bits, p = {token.probability:.3f}"]
    lines += [f"{_visible(text)}  {p:.3f}" for text, p in token.preferred]
    return "\n".join(lines)


def _visible(text: str) -> str:
    return text.replace("\n", "\\n").replace("\t", "\\t") if text.strip() else repr(text)


def _attribute(text: str) -> str:
    return str(markupsafe.escape(text))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
