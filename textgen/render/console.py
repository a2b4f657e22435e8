"""Rich rendering for the CLI: the live training display, samples side by side, result tables and
one-line errors.

Only the CLI imports this; the library reports plain values and this module decides how they look.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.progress import (
    BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
)
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    error_console.print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


def _figure(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


class _FieldsColumn(ProgressColumn):
    """The figures a trainer watches, kept in the task's fields."""

    def render(self, task: Task) -> Text:
        f = task.fields
        text = Text()
        for label, key, digits, style in (
            ("loss", "train_loss", 3, "bold"),
            ("val", "val_loss", 3, "cyan"),
            ("bpc", "val_bpc", 3, "cyan"),
            ("tok/s", "tokens_per_second", 0, ""),
            ("lr", "learning_rate", 5, "dim"),
            ("|g|", "grad_norm", 2, "dim"),
        ):
            if f.get(key) is not None:
                text.append(f" {label} ", style="dim")
                text.append(_figure(f[key], digits), style=style)
        return text


class PreparationDisplay:
    """A progress bar for preparing a big corpus: each pass over the text, with MB/s and time left.
    Call it as the preparation's progress report: display(phase, bytes done, bytes in all)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<11}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> PreparationDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        # Started by the first report: a small corpus, read whole, draws nothing at all.
        if not self.tasks:
            self.progress.start()
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done)


class TrainingDisplay:
    """TrainingCallbacks that draw a Rich progress bar and log evaluations (duck-typed, so this
    module needs no torch)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("step [bold]{task.fields[step]}[/]"),
            BarColumn(bar_width=24),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            _FieldsColumn(),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("train", total=1000, step=0, start=False)

    def __enter__(self) -> "TrainingDisplay":
        return self  # the bar appears with the run's plan, so an error before it prints cleanly

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def on_start(self, plan: Any) -> None:
        self.progress.start()
        if plan.resumed_at_step is not None:
            self.progress.console.print(f"[bold]resuming[/] at step {plan.resumed_at_step:,}")
        limits = []
        if plan.max_steps:
            limits.append(f"{plan.max_steps} steps")
        if plan.epochs:
            limits.append(f"{plan.epochs:g} epochs")
        if plan.max_time:
            limits.append(f"{plan.max_time:g} s")
        where = plan.device if plan.processes == 1 else f"{plan.processes} processes ({plan.device} each)"
        batch = "batch" if plan.processes == 1 else "global batch"
        self.progress.console.print(
            f"[bold]training[/] on {where}: {plan.parameters / 1e6:.2f} M parameters, "
            f"vocabulary {plan.vocab_size}, {plan.train_tokens:,} training and {plan.val_tokens:,} "
            f"validation tokens, {batch} {plan.batch_size} x window {plan.seq_len} "
            f"({plan.steps_per_epoch} steps per epoch), {plan.precision}, stopping at {' or '.join(limits)}",
            soft_wrap=True,
        )
        for note in plan.notes:
            self.progress.console.print(f"[yellow]note:[/] {note}")
        self.progress.start_task(self.task)

    def on_step(self, report: Any) -> None:
        self.progress.update(
            self.task,
            completed=min(1000, report.fraction_done * 1000),
            step=report.step,
            train_loss=report.train_loss,
            learning_rate=report.learning_rate,
            grad_norm=report.grad_norm,
            tokens_per_second=report.tokens_per_second,
        )

    def on_evaluation(self, report: Any) -> None:
        self.progress.update(self.task, val_loss=report.val_loss, val_bpc=report.val_bits_per_char)
        best = "  [green]best so far, saved[/]" if report.is_best else ""
        self.progress.console.print(
            f"step {report.step:>6}  validation loss {report.val_loss:.4f} nats/token, "
            f"{report.val_bits_per_char:.4f} bits/char, perplexity {report.val_perplexity:.2f}{best}",
            soft_wrap=True,
        )

    def on_checkpoint(self, path: Path) -> None: ...

    def on_stop_requested(self) -> None:
        self.progress.console.print(
            "[yellow]stopping after this step and saving where the run stands; "
            "press Ctrl-C again to abandon the run[/]"
        )


def loss_chart(metrics: list[Any], width: int = 60, height: int = 12) -> Text:
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


def run_report(path: Path, info: Any, parameters: int | None, metrics: list[Any]) -> Group:
    """What a checkpoint holds and how its run went: the info table over the loss chart
    (a chart needs two evaluations to show a trend)."""
    if len(metrics) < 2:
        return Group(info_table(path, info, parameters))
    return Group(info_table(path, info, parameters), Text(), loss_chart(metrics))


def training_summary(result: Any) -> Table:
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    best = result.best
    table.add_row("stopped by", result.stop_reason)
    table.add_row("steps", f"{result.steps:,}")
    table.add_row("time", f"{result.elapsed:.1f} s")
    table.add_row("last training loss", _figure(result.final_train_loss, 4))
    if best.val_loss is not None:
        table.add_row("best validation loss", f"{best.val_loss:.4f} nats/token (step {best.step:,})")
        table.add_row("best bits per character", _figure(best.val_bits_per_char, 4))
        table.add_row("best perplexity", _figure(best.val_perplexity, 2))
    table.add_row("checkpoint", str(result.checkpoint))
    return table


def evaluation_table(result: Any, what: str) -> Table:
    table = Table(title=f"evaluation of {what}", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    table.add_row("loss", f"{result.loss:.4f} nats/token")
    table.add_row("perplexity", _figure(result.perplexity, 3))
    table.add_row("bits per character", _figure(result.bits_per_char, 4))
    table.add_row("tokens scored", f"{result.tokens:,}")
    table.add_row("characters", f"{result.characters:,}")
    if result.unseen:
        what_was_done = {"skipped": "left out of the score", "replaced": "replaced by a known stand-in",
                         "<unk>": "scored as <unk>"}[result.unseen_handling]
        table.add_row("unseen symbols", f"{result.unseen:,} {what_was_done}")
    return table


def info_table(path: Path, info: Any, parameters: int | None = None) -> Table:
    table = Table(title=f"checkpoint {path}", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    model, tok, corpus, best, training = info.model, info.tokenizer, info.corpus, info.best, info.training
    table.add_row("model", f"{model.cell} {model.layers} x {model.hidden_size}, embedding {model.embedding_size}, "
                           f"dropout {model.dropout:g}{', tied' if model.tie_weights else ''}"
                           f"{', skip connections' if model.skip_connections else ''}")
    if parameters is not None:
        table.add_row("parameters", f"{parameters:,}")
    documents = getattr(tok, "documents", "none")
    per_document = f", one document per {'line' if documents == 'lines' else 'paragraph'}" if documents != "none" else ""
    table.add_row("tokenizer", f"{tok.kind}, vocabulary {model.vocab_size:,}{per_document}")
    table.add_row("corpus", f"{corpus.source} ({corpus.characters:,} characters, "
                            f"last {corpus.val_fraction:g} held out)")
    config = training.config
    shape = f", batch {config.batch_size} x window {config.seq_len}"
    preset = f", preset {config.preset}" if config.preset else ""
    table.add_row("trained", f"{training.steps:,} steps in {training.elapsed:.0f} s{shape}{preset}")
    regularisers = [f"{name} {value:g}" for name, value in (
        ("weight decay", config.weight_decay), ("weight drop", model.weight_drop),
        ("embedding dropout", model.embedding_dropout), ("AR", config.activation_penalty),
        ("TAR", config.activation_change_penalty), ("weight average decay", config.ema_decay)) if value]
    if regularisers:
        table.add_row("regularisers", ", ".join(regularisers))
    if best.val_loss is not None:
        table.add_row("best validation", f"{best.val_loss:.4f} nats/token, "
                                         f"{_figure(best.val_bits_per_char, 4)} bits/char at step {best.step:,}")
    return table


def write_piece(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def print_note(message: str) -> None:
    """A status line on stderr, so it never mixes with text a script reads from stdout."""
    error_console.print(Text(message, style="dim"), soft_wrap=True)


# --- samples ---------------------------------------------------------------------------------

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

    def __enter__(self) -> "SideBySide":
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


# --- interactive mode ----------------------------------------------------------------------------


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


def next_tokens_table(candidates: list[Any]) -> Table:
    table = Table(show_edge=False)
    table.add_column("#", justify="right", style="bold")
    table.add_column("token")
    table.add_column("probability", justify="right")
    table.add_column("", style="cyan")
    for number, candidate in enumerate(candidates, start=1):
        bar = "█" * max(1, round(candidate.probability * 20)) if candidate.probability >= 0.025 else "▏"
        table.add_row(str(number), visible_token(candidate.text), f"{candidate.probability:.1%}", bar)
    return table


def settings_table(config: Any) -> Table:
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="dim")
    table.add_column()
    rows = [
        ("length", f"{config.length} characters"),
        ("temperature", f"{config.temperature:g}" + (" (unused: greedy)" if config.greedy else "")),
        ("top-k", f"{config.top_k}" + (" (off)" if config.top_k == 0 else "")),
        ("top-p", f"{config.top_p:g}" + (" (off)" if config.top_p >= 1 else "")),
        ("greedy", "on" if config.greedy else "off"),
        ("repetition penalty", f"{config.repetition_penalty:g}" + (" (off)" if config.repetition_penalty == 1 else "")),
        ("stop", ", ".join(map(repr, config.stop)) or "none"),
        ("seed", "fresh each turn" if config.seed is None else str(config.seed)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def comparison_table(rows: list[Any], what: str) -> Table:
    """Several models on one text, best first; bits per character is the column that compares."""
    table = Table(title=f"models on {what}, best first", title_justify="left", box=box.SIMPLE_HEAD)
    for name, justify in (("model", "left"), ("cell", "left"), ("parameters", "right"), ("tokenizer", "left"),
                          ("tokens", "right"), ("nats/token", "right"), ("perplexity", "right"),
                          ("bits/char", "right"), ("bits/byte", "right"), ("unseen", "right")):
        table.add_column(name, justify=justify, style="bold" if name == "bits/char" else None)
    for row in rows:
        unseen = f"{row.unseen:,} {row.unseen_handling}" if row.unseen else "0"
        table.add_row(row.name, f"{row.cell} {row.layers} x {row.hidden_size}", f"{row.parameters:,}",
                      f"{row.tokenizer} {row.vocab_size:,}", f"{row.tokens:,}", _figure(row.nats_per_token, 4),
                      _figure(row.perplexity, 2), _figure(row.bits_per_char, 4), _figure(row.bits_per_byte, 4),
                      unseen)
    return table


def memory_chart(series: dict[str, list[Any]], width: int = 40) -> Table:
    """Bits per character against how often the state is reset, one bar per point and model:
    where the bars stop shrinking, the model stops using older context."""
    table = Table(title="memory reach: bits per character with the state reset every k tokens",
                  title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model")
    table.add_column("reset every", justify="right")
    table.add_column("bits/char", justify="right")
    table.add_column("", no_wrap=True)
    values = [point.bits_per_char for points in series.values() for point in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    for name, points in series.items():
        for index, point in enumerate(points):
            share = (point.bits_per_char - low) / (high - low) if high > low else 1.0
            bar = "█" * max(1, round(share * width))
            table.add_row(name if index == 0 else "", "never" if point.reset_every is None else f"{point.reset_every:,}",
                          f"{point.bits_per_char:.4f}", Text(bar, style="cyan"))
    return table


# Surprisal in bits, coloured from sure (green) to lost (red).
_SURPRISE_STEPS = [(1.0, "green"), (2.0, "bright_green"), (4.0, "yellow"), (6.0, "dark_orange"), (8.0, "red"),
                   (math.inf, "bold red")]


def surprise_text(tokens: list[Any]) -> Group:
    """The text with each token coloured by how many bits it cost the model, and a legend."""
    text = Text()
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


def gradient_chart(series: dict[str, list[Any]], width: int = 40) -> Table:
    """The mean gradient norm of the loss with respect to each layer's state k steps back, as bars
    on a log scale (each decade the same length): a fading gradient shrinks the bars steadily."""
    table = Table(title="fading gradients: |d loss_t / d h_(t-k)|, log scale", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("model", "layer", "k", "norm", ""):
        table.add_column(name, justify="right" if name in ("k", "norm", "layer") else "left", no_wrap=True)
    norms = [n for fades in series.values() for fade in fades for n in fade.norms if n > 0]
    if not norms:
        return table
    low, high = math.log10(min(norms)), math.log10(max(norms))
    for name, fades in series.items():
        for fade in fades:
            distances = sorted({0, *(2**i for i in range(12) if 2**i < len(fade.norms)), len(fade.norms) - 1})
            for index, k in enumerate(distances):
                norm = fade.norms[k]
                share = (math.log10(norm) - low) / (high - low) if norm > 0 and high > low else 0.0
                table.add_row(name if fade.layer == 0 and index == 0 else "", str(fade.layer + 1) if index == 0 else "",
                              str(k), f"{norm:.2e}", Text("█" * max(1, round(share * width)), style="magenta"))
    return table


def cells_view(report: Any, name: str, shown_tokens: int = 600) -> Group:
    """The unit that tracks each feature best, a stretch of text coloured by the very best unit's
    activation (blue low, red high), and how often each gate sits saturated."""
    table = Table(title=f"cells of {name} that track the text", title_justify="left", box=box.SIMPLE_HEAD)
    for column, justify in (("feature", "left"), ("layer", "right"), ("unit", "right"), ("correlation", "right")):
        table.add_column(column, justify=justify)
    for match in report.best:
        table.add_row(match.feature, str(match.layer + 1), str(match.unit), f"{match.correlation:+.3f}")
    parts: list[Any] = [table]
    if report.best:
        best = report.best[0]
        values = report.activations[:shown_tokens]
        low, high = min(values), max(values)
        text = Text()
        for token, value in zip(report.tokens[:shown_tokens], values):
            share = (value - low) / (high - low) if high > low else 0.5
            red, blue = round(255 * share), round(255 * (1 - share))
            text.append(token, style=Style(color="black", bgcolor=f"rgb({red},{min(red, blue) + 64},{blue})"))
        parts += [Text(f"layer {best.layer + 1} unit {best.unit} ({best.feature}, r = {best.correlation:+.3f}), "
                       "blue low to red high:", style="dim"), text]
    if report.saturation:
        gates = Table(title="gate saturation: share of time near 0 / near 1", title_justify="left", box=box.SIMPLE_HEAD)
        gates.add_column("gate")
        gates.add_column("near 0", justify="right")
        gates.add_column("near 1", justify="right")
        for gate, (low_share, high_share) in report.saturation.items():
            gates.add_row(gate, f"{low_share:.1%}", f"{high_share:.1%}")
        parts.append(gates)
    return Group(*parts)
