"""The records the library hands back to whoever shows them: a training run's plan, step and
validation reports and result, a text's scores, the insight views' results and the next-token
candidates.

Plain dataclasses that import no torch, so render can be typed with them and a front end can
hold them without loading a model. The code that fills them lives in training/, evaluation/ and
insight/; the checkpoint's own records (MetricsRow, BestRecord, CheckpointInfo) stay in checkpoint/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textgen.checkpoint import CheckpointInfo
from textgen.checkpoint.records import BestRecord, MetricsRow

# --- a training run ---------------------------------------------------------------------------


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
    # "max-steps", "epochs", "max-time", "early-stop" (no better validation for `patience`
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


# --- scoring a text ---------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    loss: float  # mean nats per scored token
    perplexity: float
    bits_per_char: float
    tokens: int  # tokens scored
    characters: int  # characters those tokens spell
    # Occurrences of symbols the model never saw, and what was done with them: "skipped" (left out
    # of the score), "replaced" (by a stand-in the model knows), "<unk>" (scored as a word model's
    # unknown token) or "" when there were none. Reported so a figure is never silently flattered.
    unseen: int = 0
    unseen_handling: str = ""

    def to_json(self) -> dict[str, float | int | str]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "tokens": self.tokens,
            "characters": self.characters,
            "unseen_symbols": self.unseen,
            "unseen_handling": self.unseen_handling or "none",
        }


@dataclass(frozen=True)
class ModelRow:
    """One model of several scored on the same text."""

    name: str
    cell: str
    layers: int
    hidden_size: int
    parameters: int
    tokenizer: str
    vocab_size: int
    tokens: int
    nats_per_token: float
    perplexity: float
    bits_per_char: float
    bits_per_byte: float
    unseen: int
    unseen_handling: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- what a model learnt ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPoint:
    reset_every: int | None  # tokens between resets of the state; None: never reset
    bits_per_char: float
    nats_per_token: float
    predictions: int = 0  # how many predictions the point scored (all of them for `never`)


@dataclass(frozen=True)
class GradientFade:
    layer: int  # 0 is the layer nearest the input
    norms: list[float]  # mean norm of d loss_t / d h_(t-k), for k = 0, 1, ..., distance


@dataclass(frozen=True)
class TokenSurprise:
    text: str  # the token as text
    bits: float  # -log2 p(token | everything before it)
    probability: float
    preferred: list[tuple[str, float]]  # the model's likeliest tokens there, with their probabilities


@dataclass(frozen=True)
class CellMatch:
    feature: str
    layer: int
    unit: int
    correlation: float  # Pearson's r between the unit's activation and the feature, token by token


@dataclass
class CellReport:
    best: list[CellMatch]  # the unit that tracks each feature best (by |r|)
    activations: list[float]  # of the best unit of the best-tracked feature, token by token
    tokens: list[str]
    saturation: dict[str, tuple[float, float]] = field(default_factory=dict)  # "layer 1 input gate": (near 0, near 1)


# --- sampling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextToken:
    """One candidate for the next token: its id, its text and its probability under the settings."""

    token_id: int
    text: str
    probability: float
