"""Every default textgen uses, as dataclasses that cross module borders.

The CLI reads its option defaults from here, the library functions take these
objects, and checkpoints store them as JSON (see `to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from textgen.errors import TextgenError

CELLS = ("lstm", "gru", "rnn-tanh", "rnn-relu")
TOKENIZER_KINDS = ("char", "word", "subword")
SUBWORD_MODELS = ("unigram", "bpe")
PRECISIONS = ("auto", "float32", "bfloat16")
DOCUMENT_MODES = ("none", "lines", "blank-lines")
DEFAULT_CORPUS = "python-docs"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit
MAX_VOCAB = 1_000_000
MIN_SUBWORD_VOCAB = 260  # sentencepiece's 256 byte pieces, <unk>, the newline and a little room
MAX_LAYER_SIZE = 65_536  # far beyond any RNN that trains on one machine; stops typos like 5120000
UNKNOWN_POLICIES = ("error", "skip", "replace")  # what to do with seed-text symbols the model never saw
MAX_NUM_SAMPLES = 1000  # one batch; beyond this a word model's logits alone take gigabytes


@dataclass
class TokenizerConfig:
    kind: str = "char"
    # word level: the vocabulary keeps the `max_vocab` most frequent tokens seen
    # at least `min_count` times; the rest become <unk>.
    max_vocab: int = 20000
    min_count: int = 2
    # word level: whitespace runs are tokens of their own. Folding a leading space into the next
    # word (" the", as GPT-2 does) measured slightly worse on held-out tiny Shakespeare, 1.835 vs
    # 1.823 bits/char in 120 s, despite more <unk> flattering it (benchmarks/word_spacing.py).
    fold_spaces: bool = False
    # subword level (sentencepiece)
    vocab_size: int = 2000
    subword_model: str = "unigram"
    # "lines" or "blank-lines": the text is many short independent documents, each read from a
    # fresh state between end markers (textgen/data/batches.py); "none": one continuous text.
    documents: str = "none"


@dataclass
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer
    cell: str = "lstm"
    layers: int = 2
    embedding_size: int = 128
    hidden_size: int = 384  # the `small` preset's
    dropout: float = 0.0
    tie_weights: bool = False
    # The embedding feeds every layer and every layer feeds the output (textgen/model.py). In 80 s
    # on tiny Shakespeare: 1.434 nats/char vs 1.463 without, same size (benchmarks/README.md).
    # Checkpoints written before this option existed have it off.
    skip_connections: bool = True


@dataclass
class TrainConfig:
    # Windows of 32 tokens in 32 rows: in 80 s on tiny Shakespeare this beat 64 x 16, 32 x 16,
    # 32 x 64 and 16 x 64 (1.466 vs 1.49-1.50 nats/char; benchmarks/README.md).
    seq_len: int = 32
    batch_size: int = 32
    learning_rate: float = 6e-3
    # Cosine decay ends at learning_rate * min_lr_ratio: all the way down measured a little better
    # than a tenth in 80 s and 600 s runs (benchmarks/README.md).
    min_lr_ratio: float = 0.0
    warmup_steps: int = 20
    # AdamW's decoupled decay, on weight matrices only: 0.1 and more beat 0.01 at every budget tried.
    weight_decay: float = 0.1
    # AdamW's momentum. 0.8 rather than the usual 0.9: on tiny Shakespeare it reached 1.420 nats/char
    # in 80 s where 0.9 reached 1.434-1.435, and 1.358 in 600 s where 0.9 reached 1.366.
    adam_beta1: float = 0.8
    clip: float = 1.0
    val_fraction: float = 0.1
    max_steps: int | None = None
    epochs: float | None = None
    max_time: float | None = None
    eval_every: int = 0  # steps between validations; 0 spreads five over the run (the last at the end)
    seed: int = 1337
    device: str = "auto"
    # auto: bfloat16 autocast where the hardware multiplies it natively (AVX-512 BF16, AMX, recent
    # GPUs), float32 elsewhere. The weights and the optimiser always stay float32.
    precision: str = "auto"
    # Evaluate and save an exponential moving average of the weights (0 = off): it smooths
    # the noise of the last steps for free.
    ema_decay: float = 0.0
    patience: int = 0  # stop after this many evaluations without a new best (0 = never)
    preset: str | None = None  # the preset these settings came from, recorded for `textgen info`
    # used when no limit is given at all, so a bare `textgen train` ends
    default_max_time: float = 300.0


@dataclass(frozen=True)
class Preset:
    """A model and training shape measured to do well in a given time on a 2-core laptop-class CPU."""

    description: str
    model: dict[str, Any]
    train: dict[str, Any]
    up_to_seconds: float  # --max-time budgets up to this pick this preset when no shape is given


# Measured on tiny Shakespeare (benchmarks/README.md has the runs behind each choice).
PRESETS: dict[str, Preset] = {
    "small": Preset(
        "2 x 384 LSTM, no dropout, 32 rows x 32 tokens: learns fastest in the first minutes",
        model={"layers": 2, "hidden_size": 384, "embedding_size": 128, "dropout": 0.0},
        train={"batch_size": 32, "seq_len": 32, "learning_rate": 6e-3, "weight_decay": 0.1},
        # small beat medium by 0.03 nats/char at 150 s and lost by 0.01 at 240 s, when it overfits
        up_to_seconds=200.0,
    ),
    "medium": Preset(
        "2 x 512 LSTM with dropout 0.3 and weight decay 0.2, 32 rows x 64 tokens: keeps improving "
        "over ten minutes and more",
        model={"layers": 2, "hidden_size": 512, "embedding_size": 128, "dropout": 0.3},
        train={"batch_size": 32, "seq_len": 64, "learning_rate": 8e-3, "weight_decay": 0.2},
        up_to_seconds=math.inf,
    ),
}
# Options that set a model's or run's shape: giving any of them turns the automatic preset off.
SHAPE_OPTIONS = {"layers", "hidden_size", "embedding_size", "dropout", "batch_size", "seq_len", "learning_rate"}


def preset_for_budget(seconds: float) -> str:
    """The preset that did best on this kind of machine within `seconds` of training."""
    return next(name for name, preset in PRESETS.items() if seconds <= preset.up_to_seconds)


def apply_preset(
    name: str, model_config: ModelConfig, train_config: TrainConfig, keep: set[str] = frozenset()
) -> tuple[ModelConfig, TrainConfig]:
    """The configs with preset `name` filled in, except the fields named in `keep` (the user's own)."""
    if name not in PRESETS:
        raise TextgenError(f"--preset must be one of {', '.join(PRESETS)}, not {name!r}")
    preset = PRESETS[name]
    model = {k: v for k, v in preset.model.items() if k not in keep}
    train = {k: v for k, v in preset.train.items() if k not in keep}
    return (
        dataclasses.replace(model_config, **model),
        dataclasses.replace(train_config, **train, preset=name),
    )


@dataclass
class SampleConfig:
    length: int = 500  # characters of output, whatever the tokenizer
    # The distribution is shaped in this order: repetition penalty, temperature, top-k, top-p.
    temperature: float = 0.8
    top_k: int = 40  # 0 = off
    top_p: float = 1.0  # nucleus sampling; 1.0 = off
    greedy: bool = False  # always the likeliest token; temperature, top-k and top-p are then unused
    # Divides positive logits (multiplies negative ones) of every token already in the text,
    # as in CTRL; 1.0 = off. Meant for word and subword models that fall into loops.
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()  # a sample ends where one of these first appears (the stop text is left out)
    num_samples: int = 1
    seed: int | None = None  # None: a fresh one, reported so the run can be repeated
    unknown: str = "error"  # seed-text symbols the model never saw: error | skip | replace

    def __post_init__(self) -> None:
        # One string is one stop text, not a sequence of one-character stops; JSON gives a list.
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def unescape(text: str) -> str:
    r"""A stop text as typed on a command line: \n is a line break, \t a tab, \\ a backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


# Checks that name the option a user typed, so the CLI can run them before importing torch.


def check_tokenizer_config(config: TokenizerConfig) -> None:
    if config.kind not in TOKENIZER_KINDS:
        raise TextgenError(f"--tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, not {config.kind!r}")
    if config.subword_model not in SUBWORD_MODELS:
        raise TextgenError(f"--subword-model must be one of {', '.join(SUBWORD_MODELS)}, not {config.subword_model!r}")
    if config.max_vocab < 2:
        raise TextgenError(f"--max-vocab must be at least 2, got {config.max_vocab}")
    if config.min_count < 1:
        raise TextgenError(f"--min-count must be at least 1, got {config.min_count}")
    if not MIN_SUBWORD_VOCAB <= config.vocab_size <= MAX_VOCAB:
        raise TextgenError(f"--vocab-size must be between {MIN_SUBWORD_VOCAB} and {MAX_VOCAB:,}, got {config.vocab_size}")
    if config.documents not in DOCUMENT_MODES:
        raise TextgenError(f"--documents must be one of {', '.join(DOCUMENT_MODES)}, not {config.documents!r}")
    if config.max_vocab > MAX_VOCAB:
        raise TextgenError(f"--max-vocab must be at most {MAX_VOCAB:,}, got {config.max_vocab}")


def check_model_config(config: ModelConfig) -> None:
    """Reject shapes that cannot be built, with the option name the user typed."""
    if config.cell not in CELLS:
        raise TextgenError(f"--cell must be one of {', '.join(CELLS)}, not {config.cell!r}")
    for name, value, most in (("--layers", config.layers, 64), ("--hidden-size", config.hidden_size, MAX_LAYER_SIZE),
                              ("--embedding-size", config.embedding_size, MAX_LAYER_SIZE)):
        if value < 1:
            raise TextgenError(f"{name} must be at least 1, got {value}")
        if value > most:
            raise TextgenError(f"{name} must be at most {most:,}, got {value}")
    if not 0.0 <= config.dropout < 1.0:
        raise TextgenError(f"--dropout must be in [0, 1), got {config.dropout}")
    if config.tie_weights and config.hidden_size != config.embedding_size:
        raise TextgenError(
            "--tie-weights needs --embedding-size equal to --hidden-size "
            f"(got {config.embedding_size} and {config.hidden_size})"
        )
    if config.tie_weights and config.skip_connections:
        raise TextgenError(
            "--tie-weights needs --no-skip-connections (with skip connections the output layer reads every layer)"
        )


def check_train_config(config: TrainConfig) -> None:
    checks = [
        ("--seq-len", config.seq_len >= 1, "at least 1"),
        ("--batch-size", config.batch_size >= 1, "at least 1"),
        ("--learning-rate", config.learning_rate > 0, "greater than 0"),
        ("--clip", config.clip >= 0, "0 (off) or more"),
        ("adam_beta1", 0.0 <= config.adam_beta1 < 1.0, "in [0, 1)"),
        ("--val-fraction", 0.0 <= config.val_fraction <= 0.5, "between 0 and 0.5"),
        ("--max-steps", config.max_steps is None or config.max_steps >= 1, "at least 1"),
        ("--epochs", config.epochs is None or config.epochs > 0, "greater than 0"),
        ("--max-time", config.max_time is None or 0 < config.max_time < math.inf, "greater than 0 seconds, and finite"),
        ("--eval-every", config.eval_every >= 0, "0 (automatic) or more"),
        ("--seed", 0 <= config.seed <= MAX_SEED, f"between 0 and {MAX_SEED}"),
        ("--precision", config.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        ("--ema-decay", 0.0 <= config.ema_decay < 1.0, "in [0, 1)"),
        ("--patience", config.patience >= 0, "0 (off) or more"),
    ]
    for option, ok, requirement in checks:
        if not ok:
            raise TextgenError(f"{option} must be {requirement}")


def check_sample_config(config: SampleConfig) -> None:
    if not 0 < config.temperature < math.inf:
        raise TextgenError(f"--temperature must be greater than 0 (and finite), got {config.temperature}")
    if config.top_k < 0:
        raise TextgenError(f"--top-k must be 0 (off) or more, got {config.top_k}")
    if not 0 < config.top_p <= 1:
        raise TextgenError(f"--top-p must be greater than 0 and at most 1 (1 = off), got {config.top_p}")
    if not 1 <= config.repetition_penalty < math.inf:
        raise TextgenError(
            f"--repetition-penalty must be at least 1 (1 = off; 1.1 to 1.3 is typical), got {config.repetition_penalty}"
        )
    if any(not isinstance(text, str) or not text for text in config.stop):
        raise TextgenError("--stop needs a non-empty text")
    if config.length < 1:
        raise TextgenError(f"--length must be at least 1 character, got {config.length}")
    if not 1 <= config.num_samples <= MAX_NUM_SAMPLES:
        raise TextgenError(f"--num-samples must be at least 1 and at most {MAX_NUM_SAMPLES}, got {config.num_samples}")
    if config.seed is not None and not 0 <= config.seed <= MAX_SEED:
        raise TextgenError(f"--seed must be between 0 and {MAX_SEED}, got {config.seed}")
    if config.unknown not in UNKNOWN_POLICIES:
        raise TextgenError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {config.unknown!r}")


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config from JSON, ignoring keys a newer or older textgen wrote."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
