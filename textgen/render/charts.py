"""The loss chart: training and validation loss against step, drawn in text so it shows in any
terminal and any pipe."""

from __future__ import annotations

import math

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from textgen.checkpoint.records import MetricsRow


_AXIS_WIDTH = 9  # the loss labels and the axis, left of the plot


class LossChart:
    """loss_chart at `width` columns of plot, or narrower where the terminal is."""

    def __init__(self, metrics: list[MetricsRow], width: int = 60, height: int = 12) -> None:
        self.metrics, self.width, self.height = metrics, width, height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield loss_chart(self.metrics, max(10, min(self.width, options.max_width - _AXIS_WIDTH)), self.height)


def loss_chart(metrics: list[MetricsRow], width: int = 60, height: int = 12) -> Text:
    """Training and validation loss against step, drawn in text so it works in any terminal."""
    series = [
        ("training", "train_loss", "·", "yellow"),
        ("validation", "val_loss", "•", "cyan"),
    ]
    points = {
        key: [(row.step, getattr(row, key)) for row in metrics
              if isinstance(getattr(row, key), (int, float)) and math.isfinite(getattr(row, key))]
        for _, key, _, _ in series
    }
    values = [loss for curve in points.values() for _, loss in curve]
    steps = [step for curve in points.values() for step, _ in curve]
    if not values:
        return Text("no evaluations recorded yet", style="dim")
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    first, last = min(steps), max(steps)
    grid = [[" "] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]

    def row_of(loss: float) -> int:
        return round((high - loss) / (high - low) * (height - 1))

    def column_of(step: float) -> int:
        return round((step - first) / (last - first) * (width - 1)) if last > first else width // 2

    for _, key, mark, style in series:
        curve = sorted(points[key])
        for (s0, l0), (s1, l1) in zip(curve, curve[1:]):  # straight segments between evaluations
            previous_row = row_of(l0)
            for column in range(column_of(s0), column_of(s1) + 1):
                step = first + (last - first) * column / (width - 1)
                share = (step - s0) / (s1 - s0) if s1 > s0 else 0.0
                row = row_of(l0 + (l1 - l0) * min(1.0, max(0.0, share)))
                for filled in range(min(row, previous_row + 1), max(row, previous_row - 1) + 1):
                    grid[filled][column], styles[filled][column] = mark, style  # no gaps on steep parts
                previous_row = row
        for step, loss in curve:
            grid[row_of(loss)][column_of(step)], styles[row_of(loss)][column_of(step)] = "●", style

    chart = Text()
    for index, (cells, cell_styles) in enumerate(zip(grid, styles)):
        label = high - (high - low) * index / (height - 1)
        chart.append(f"{label:7.3f} ┤" if index in (0, height // 2, height - 1) else "        │", style="dim")
        for cell, style in zip(cells, cell_styles):
            chart.append(cell, style=style)
        chart.append("\n")
    chart.append("        └" + "─" * width + "\n", style="dim")
    left, right = f"step {first:,}", f"{last:,}"
    chart.append(" " * 9 + left + " " * max(1, width - len(left) - len(right)) + right + "\n", style="dim")
    chart.append(" " * 9)
    for name, key, mark, style in series:
        if points[key]:
            chart.append(f"{mark} {name} loss   ", style=style)
    chart.append("(nats/token)", style="dim")
    return chart
