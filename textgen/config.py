"""Every default textgen uses, as dataclasses that cross module borders.

The CLI reads its option defaults from here, the library functions take these
objects, and checkpoints store them as JSON (see `to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

CELLS = ("lstm", "gru", "rnn-tanh", "rnn-relu")
TOKENIZER_KINDS = ("char", "word", "subword")
SUBWORD_MODELS = ("unigram", "bpe")
DEFAULT_CORPUS = "python-docs"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")


@dataclass
class TokenizerConfig:
    kind: str = "char"
    # word level: the vocabulary keeps the `max_vocab` most frequent tokens seen
    # at least `min_count` times; the rest become <unk>.
    max_vocab: int = 20000
    min_count: int = 2
    # word level: fold a single leading space into the next token (" the"), as GPT-2 does,
    # rather than giving every run of whitespace a token of its own; benchmarks/word_spacing.py
    # measures the two.
    fold_spaces: bool = True
    # subword level (sentencepiece)
    vocab_size: int = 2000
    subword_model: str = "unigram"


@dataclass
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer
    cell: str = "lstm"
    layers: int = 2
    embedding_size: int = 128
    hidden_size: int = 512
    dropout: float = 0.0
    tie_weights: bool = False


@dataclass
class TrainConfig:
    seq_len: int = 64
    batch_size: int = 64
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at learning_rate * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    clip: float = 1.0
    val_fraction: float = 0.1
    max_steps: int | None = None
    epochs: float | None = None
    max_time: float | None = None
    eval_every: int = 0  # steps between validations; 0 spreads five over the run (the last at the end)
    seed: int = 1337
    device: str = "auto"
    # used when no limit is given at all, so a bare `textgen train` ends
    default_max_time: float = 300.0


@dataclass
class SampleConfig:
    length: int = 500
    temperature: float = 0.8
    top_k: int = 40
    num_samples: int = 1
    seed: int | None = None


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config from JSON, ignoring keys a newer or older textgen wrote."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
