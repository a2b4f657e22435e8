"""The hooks a training run calls on its watcher: the plan before the first step, a report after
each step and validation, the checkpoints it writes. The loop never prints; the CLI's display, a
notebook or a test each implement the hooks they want. The records themselves live in
textgen.reports, which imports no torch."""

from __future__ import annotations

from pathlib import Path

from textgen.reports import EvaluationReport, RunPlan, StepReport, TrainingResult

__all__ = ["EvaluationReport", "RunPlan", "StepReport", "TrainingCallbacks", "TrainingResult"]


class TrainingCallbacks:
    """Override what you want to watch; every hook is optional."""

    def on_start(self, plan: RunPlan) -> None: ...
    def on_step(self, report: StepReport) -> None: ...
    def on_evaluation(self, report: EvaluationReport) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...
    def on_stop_requested(self) -> None: ...
