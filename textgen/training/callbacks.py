"""What a training run tells its watcher: the plan before the first step, a report after each
step and validation, and the result. The loop never prints; the CLI's display, a notebook or a
test each implement the hooks they want."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from textgen.checkpoint import CheckpointInfo
from textgen.checkpoint.records import BestRecord, MetricsRow


@dataclass
class RunPlan:
    """What the run is about to do, reported once before the first step."""

    device: str
    parameters: int
    vocab_size: int
    train_tokens: int
    val_tokens: int
    batch_size: int
    seq_len: int
    steps_per_epoch: int
    max_steps: int | None
    epochs: float | None
    max_time: float | None
    precision: str = "float32"
    resumed_at_step: int | None = None
    notes: list[str] = field(default_factory=list)
    processes: int = 1  # under torchrun; batch_size is then the global batch, shared among them


@dataclass
class StepReport:
    step: int
    epoch: float
    train_loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    elapsed: float
    fraction_done: float


@dataclass
class EvaluationReport:
    step: int
    val_loss: float
    val_bits_per_char: float
    val_perplexity: float
    is_best: bool
    elapsed: float


@dataclass
class TrainingResult:
    checkpoint: Path
    steps: int
    elapsed: float
    # "max-steps", "epochs", "max-time", "early-stop" (no better validation for --patience
    # evaluations) or "interrupted"
    stop_reason: str
    best: BestRecord
    final_train_loss: float
    metrics: list[MetricsRow] = field(default_factory=list)
    info: CheckpointInfo | None = None  # what the checkpoint's config.json says
    parameters: int = 0

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"


class TrainingCallbacks:
    """Override what you want to watch; every hook is optional."""

    def on_start(self, plan: RunPlan) -> None: ...
    def on_step(self, report: StepReport) -> None: ...
    def on_evaluation(self, report: EvaluationReport) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...
    def on_stop_requested(self) -> None: ...
