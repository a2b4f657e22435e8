"""Rich rendering for the CLI: the live training display, result tables and one-line errors.

Only the CLI imports this; the library reports plain values and this module decides how they look.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
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
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_start(self, plan: Any) -> None:
        limits = []
        if plan.max_steps:
            limits.append(f"{plan.max_steps} steps")
        if plan.epochs:
            limits.append(f"{plan.epochs:g} epochs")
        if plan.max_time:
            limits.append(f"{plan.max_time:g} s")
        self.progress.console.print(
            f"[bold]training[/] on {plan.device}: {plan.parameters / 1e6:.2f} M parameters, "
            f"vocabulary {plan.vocab_size}, {plan.train_tokens:,} training and {plan.val_tokens:,} "
            f"validation tokens, batch {plan.batch_size} x window {plan.seq_len} "
            f"({plan.steps_per_epoch} steps per epoch), stopping at {' or '.join(limits)}",
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
            "[yellow]stopping after this step and saving; press Ctrl-C again to abandon the run[/]"
        )


def training_summary(result: Any) -> Table:
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    best = result.best
    table.add_row("stopped by", result.stop_reason)
    table.add_row("steps", f"{result.steps:,}")
    table.add_row("time", f"{result.elapsed:.1f} s")
    table.add_row("last training loss", _figure(result.final_train_loss, 4))
    if best.get("val_loss") is not None:
        table.add_row("best validation loss", f"{best['val_loss']:.4f} nats/token (step {best['step']:,})")
        table.add_row("best bits per character", _figure(best.get("val_bits_per_char"), 4))
        table.add_row("best perplexity", _figure(best.get("val_perplexity"), 2))
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
    return table


def info_table(path: Path, info: Any, parameters: int | None = None) -> Table:
    table = Table(title=f"checkpoint {path}", show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    model, tok, corpus, best, training = info.model, info.tokenizer, info.corpus, info.best, info.training
    table.add_row("model", f"{model.cell} {model.layers} x {model.hidden_size}, embedding {model.embedding_size}, "
                           f"dropout {model.dropout:g}{', tied' if model.tie_weights else ''}")
    if parameters is not None:
        table.add_row("parameters", f"{parameters:,}")
    table.add_row("tokenizer", f"{tok.kind}, vocabulary {model.vocab_size:,}")
    table.add_row("corpus", f"{corpus.get('source')} ({corpus.get('characters', 0):,} characters, "
                            f"last {corpus.get('val_fraction', 0):g} held out)")
    if training.get("steps") is not None:
        table.add_row("trained", f"{training['steps']:,} steps in {training.get('elapsed', 0):.0f} s")
    if best.get("val_loss") is not None:
        table.add_row("best validation", f"{best['val_loss']:.4f} nats/token, "
                                         f"{_figure(best.get('val_bits_per_char'), 4)} bits/char at step {best['step']:,}")
    return table


def write_piece(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()
