"""What a terminal shows while work runs: the bar for preparing a big corpus, and the training
display (the run's plan, a progress bar with the figures a trainer watches, a line per validation)."""

from __future__ import annotations

from pathlib import Path

from rich.progress import (
    BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
)
from rich.text import Text

from textgen.render.console import console, figure
from textgen.reports import EvaluationReport, RunPlan, StepReport


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
                text.append(figure(f[key], digits), style=style)
        return text


class PreparationDisplay:
    """A progress bar for preparing a big corpus: each pass over the text, with MB/s and time left.
    Call it as the preparation's progress report: display(phase, bytes done, bytes in all)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<11}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

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
    """TrainingCallbacks that draw a Rich progress bar and log evaluations (duck-typed: the hooks
    live in textgen.training, which imports torch)."""

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

    def __enter__(self) -> TrainingDisplay:
        return self  # the bar appears with the run's plan, so an error before it prints cleanly

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def on_start(self, plan: RunPlan) -> None:
        self.progress.start()
        if plan.resumed_at_step is not None:
            self.progress.console.print(f"[bold]resuming[/] at step {plan.resumed_at_step:,}")
        self.progress.console.print(plan_line(plan), soft_wrap=True)
        for note in plan.notes:
            self.progress.console.print(f"[yellow]note:[/] {note}")
        self.progress.start_task(self.task)

    def on_step(self, report: StepReport) -> None:
        self.progress.update(
            self.task,
            completed=min(1000, report.fraction_done * 1000),
            step=report.step,
            train_loss=report.train_loss,
            learning_rate=report.learning_rate,
            grad_norm=report.grad_norm,
            tokens_per_second=report.tokens_per_second,
        )

    def on_evaluation(self, report: EvaluationReport) -> None:
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


def plan_line(plan: RunPlan) -> str:
    """The run's plan in one sentence (with markup): where, how big, on what, until when."""
    limits = []
    if plan.max_steps:
        limits.append(f"{plan.max_steps} steps")
    if plan.epochs:
        limits.append(f"{plan.epochs:g} epochs")
    if plan.max_time:
        limits.append(f"{plan.max_time:g} s")
    where = plan.device if plan.processes == 1 else f"{plan.processes} processes ({plan.device} each)"
    batch = "batch" if plan.processes == 1 else "global batch"
    return (f"[bold]training[/] on {where}: {plan.parameters / 1e6:.2f} M parameters, "
            f"vocabulary {plan.vocab_size}, {plan.train_tokens:,} training and {plan.val_tokens:,} "
            f"validation tokens, {batch} {plan.batch_size} x window {plan.seq_len} "
            f"({plan.steps_per_epoch} steps per epoch), {plan.precision}, stopping at {' or '.join(limits)}")
