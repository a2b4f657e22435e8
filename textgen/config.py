"""Every default and every policy textgen uses, as dataclasses that cross module borders.

The CLI reads its option defaults from here, the library functions take these objects, and
checkpoints store them as JSON (see `to_dict` / `from_dict`). Each config checks itself when it is
made, so a config that exists is a valid one; an OptionError names the field, and each front end
(CLI flags, Python keywords, interactive commands) words it with its own name for that field.
`settings_for` turns a request (the fields a user set, and perhaps a preset) into the configs a
run uses, with every policy applied, for the CLI and the Python API alike.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from textgen.errors import TextgenError


class SettingError(TextgenError):
    """A problem a setting explains or fixes. `template` is the message with each setting it names
    written as {field} (its config field); `fields` lists them. str() gives the message with the
    field names themselves, which are the Python API's keywords; `worded` gives it in another front
    end's vocabulary (the CLI's flags, the interactive loop's commands)."""

    def __init__(self, template: str, *fields: str) -> None:
        self.template, self.fields = template, fields
        super().__init__(self.worded(lambda field: field))

    def worded(self, name_for: Callable[[str], str]) -> str:
        message = self.template
        for field in self.fields:
            message = message.replace("{" + field + "}", name_for(field))
        return message


class OptionError(SettingError):
    """A setting out of range or of an unknown kind. `field` is the config field; `problem` reads
    after any name for it ("must be at least 1, got 0") and may name further settings, `mentions`,
    as {field}."""

    def __init__(self, field: str, problem: str, *mentions: str) -> None:
        self.field, self.problem = field, problem
        super().__init__("{" + field + "} " + problem, field, *mentions)

    def worded(self, name_for: Callable[[str], str] | str) -> str:
        """The message with every setting named by `name_for`; a plain string names `field` alone."""
        if isinstance(name_for, str):
            name = name_for
            return super().worded(lambda field: name if field == self.field else field)
        return super().worded(name_for)


# The cell kinds in textgen.model.cells, which checks that it holds exactly these, each with how
# prose writes it (a preset's description, say); listed here, free of torch, so that `cell` is
# checked before torch is imported.
CELL_LABELS = {"lstm": "LSTM", "gru": "GRU", "rnn-tanh": "tanh RNN", "rnn-relu": "ReLU RNN", "mingru": "minGRU",
               "minlstm": "minLSTM"}
CELLS = tuple(CELL_LABELS)
# The cells whose gates read the input alone: no hidden-to-hidden matrices for weight_drop to drop.
INPUT_GATED_CELLS = ("mingru", "minlstm")
TOKENIZER_KINDS = ("char", "word", "subword")
SUBWORD_MODELS = ("unigram", "bpe")
PRECISIONS = ("auto", "float32", "bfloat16")
OPTIMIZERS = ("adamw", "muon")
DOCUMENT_MODES = ("none", "lines", "blank-lines")
DEFAULT_CORPUS = "python-docs"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints")
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit
MAX_VOCAB = 1_000_000
MIN_SUBWORD_VOCAB = 260  # sentencepiece's 256 byte pieces, <unk>, the newline and a little room
# A character model mixes in Kneser-Ney counts of contexts up to this many characters less one
# unless told otherwise (0 turns them off): counted in half a second, they took 80 s on one AVX2
# core from 1.560-1.568 to 1.452-1.455 nats/char on tiny Shakespeare under nanoGPT's protocol, two
# pairs of two (benchmarks/HISTORY.md, 2026-12-05: n-gram counts mixed in). Orders 6 and 8 scored
# a little worse. Larger vocabularies go without (MAX_NGRAM_VOCAB).
CHAR_NGRAM_ORDER = 7
MAX_NGRAM_ORDER = 10  # contexts of up to 9 tokens: longer ones are almost all seen once
# n-gram counts are taken over the training text's first this many tokens: the tables grow with
# the distinct n-grams (about 18 MB for tiny Shakespeare's million characters; random text of
# this length would give 190 MB), and counting takes seconds in proportion. Beyond, a prediction
# leaves out of the counts an occurrence that may be another's: a little pessimistic, no worse.
MAX_COUNTED_TOKENS = 2_000_000
# Counts are read densely (every symbol's count of a context at once), which suits the few dozen
# to few hundred symbols of a character vocabulary, not the thousands of Chinese characters,
# words or subwords: a run with a larger vocabulary goes without them, and says so.
MAX_NGRAM_VOCAB = 512
MAX_LAYER_SIZE = 65_536  # far beyond any RNN that trains on one machine; stops typos like 5120000
UNKNOWN_POLICIES = ("error", "skip", "replace")  # what to do with seed-text symbols the model never saw
MAX_NUM_SAMPLES = 1000  # one batch; beyond this a word model's logits alone take gigabytes
# A file this big, or any folder or glob, is read a block at a time into a memory-mapped id cache
# (textgen/data/prepare.py) instead of into memory whole.
STREAM_ABOVE_BYTES = 32 << 20
# Validation scores at most this many held-out tokens (the first ones): a big corpus's tenth would
# otherwise take minutes each time (a word model's 20,000-way softmax per token above all). Tiny
# Shakespeare's held-out part, 111,540 characters, is scored whole. The plan line says when it applies.
MAX_VALIDATION_TOKENS = 250_000


@dataclass
class TokenizerConfig:
    kind: str = "char"
    # word level: the vocabulary keeps the `max_vocab` most frequent tokens seen
    # at least `min_count` times; the rest become <unk>.
    max_vocab: int = 20000
    min_count: int = 2
    # word level: whitespace runs are tokens of their own, since folding a leading space into the
    # next word (" the", as GPT-2 does) scored a little worse and left more words <unk>
    # (benchmarks/HISTORY.md#2026-11-22-textgen-01-issue-2).
    fold_spaces: bool = False
    # subword level (sentencepiece)
    vocab_size: int = 2000
    subword_model: str = "unigram"
    # sentencepiece learns from at most this many sentences (lines, cut at 1,000 characters), drawn
    # evenly from the training text by a fixed draw; 0: from all of them. Tiny Shakespeare has
    # 40,000 lines; a 200 MB corpus has millions, and learning from all would take minutes.
    subword_sample: int = 500_000
    # "lines" or "blank-lines": the text is many short independent documents, each read from a
    # fresh state between end markers (textgen/data/batches.py); "none": one continuous text.
    documents: str = "none"

    def __post_init__(self) -> None:
        check_tokenizer_config(self)


@dataclass
class ModelConfig:
    vocab_size: int = 0  # filled in from the tokenizer
    cell: str = "lstm"
    layers: int = 2
    embedding_size: int = 128
    hidden_size: int = 384  # the `small` preset's
    dropout: float = 0.0
    # AWD-LSTM's regularisers (Merity et al., 2017), off unless asked for: DropConnect on the
    # hidden-to-hidden matrices (one mask per batch, so every time step loses the same links) and
    # dropping whole token types from the embedding. Off because on top of the medium preset's
    # dropout they over-regularise a ten-minute run
    # (benchmarks/HISTORY.md#2026-11-30-the-600-s-target-and-awd-lstms-weight-drop-issue-13).
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0
    tie_weights: bool = False
    # The embedding feeds every layer and every layer feeds the output (textgen/model/rnn.py): each
    # layer gets a short path to the input and to the loss, so the model learns more per second
    # (benchmarks/HISTORY.md#2026-11-22-skip-connections-momentum-08-stronger-weight-decay-issue-3).
    # None: on, unless the weights are tied (the output layer then reads the top layer alone).
    # Checkpoints written before this option existed have it off.
    skip_connections: bool | None = None
    # An n-gram companion (textgen/model/ngram.py): Kneser-Ney counts of the training text, of
    # contexts up to ngram_order - 1 tokens, mixed with the network's prediction by a learnt gate.
    # 0: none (what checkpoints written before it existed have).
    ngram_order: int = 0

    def __post_init__(self) -> None:
        if self.skip_connections is None:
            self.skip_connections = not self.tie_weights
        check_model_config(self)


@dataclass
class TrainConfig:
    # Windows of 32 tokens in 32 rows: early in a run the model still learns the text's basic
    # statistics, and short windows in many rows buy the most updates per second
    # (benchmarks/HISTORY.md#2026-11-22-the-ablation-behind-the-presets-issue-3).
    seq_len: int = 32
    batch_size: int = 32
    learning_rate: float = 6e-3
    # Cosine decay ends at learning_rate * min_lr_ratio: all the way down measured a little better
    # than a tenth at short and long budgets alike
    # (benchmarks/HISTORY.md#2026-11-22-skip-connections-momentum-08-stronger-weight-decay-issue-3).
    min_lr_ratio: float = 0.0
    warmup_steps: int = 20
    # AdamW's decoupled decay, on weight matrices only: 0.1 and more beat 0.01 at every budget tried.
    weight_decay: float = 0.1
    # AdamW's momentum. 0.8 rather than the usual 0.9: it learnt faster in short runs and was no
    # worse in long ones
    # (benchmarks/HISTORY.md#2026-11-22-skip-connections-momentum-08-stronger-weight-decay-issue-3).
    adam_beta1: float = 0.8
    # "muon": Muon (orthogonalised momentum, Jordan et al., 2024) for the recurrent layers' weight
    # matrices, AdamW for the embedding, the output layer and the biases; its step is scaled to
    # AdamW's size (Liu et al., 2025), so learning_rate and weight_decay serve both. An option
    # pending measurement (benchmarks/README.md).
    optimizer: str = "adamw"
    muon_momentum: float = 0.95  # Muon's own momentum (Nesterov), the value its authors use
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
    # AWD-LSTM's activation regularisers (Merity et al., 2017), 0 = off: the training loss adds this
    # times the mean square of the top layer's output (AR), and the next times the mean square of
    # its change from one step to the next (TAR). Merity et al. used 2 and 1. They shape the
    # training loss only; the loss reported and validated is the plain cross-entropy. Off by
    # default: side by side they won on two threads and lost on one, no gain over all
    # (benchmarks/HISTORY.md#2026-11-30-ar-and-tar-as-options-and-eight-more-rounds-issue-13).
    activation_penalty: float = 0.0
    activation_change_penalty: float = 0.0
    patience: int = 0  # stop after this many evaluations without a new best (0 = never)
    preset: str | None = None  # the preset these settings came from, recorded for `textgen info`
    # used when no limit is given at all, so a bare `textgen train` ends
    default_max_time: float = 300.0

    def __post_init__(self) -> None:
        check_train_config(self)


@dataclass(frozen=True)
class Preset:
    """A model and training shape measured to do well for a given amount of compute."""

    description: str  # "{cell}" stands for the cell the run uses: a preset is a shape, whatever the cell
    model: dict[str, Any]
    train: dict[str, Any]
    # Budgets up to this pick this preset when no shape is given. The unit is reference tokens:
    # the tokens the calibration preset trains on in the budget on this machine (its measured
    # tokens per second times --max-time), so a slower machine counts fewer for the same seconds.
    up_to_tokens: float

    def describe(self, cell: str) -> str:
        return self.description.format(cell=CELL_LABELS.get(cell, cell))


# Chosen from runs on tiny Shakespeare: each preset is the shape that did best for its range of
# compute (benchmarks/HISTORY.md#2026-11-30-the-preset-follows-the-machines-speed-issue-13,
# and the second round on 2026-11-22 for small and medium).
PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "2 x 256 {cell}, no dropout, 32 rows x 32 tokens: the most text per second, for short budgets and slow CPUs",
        model={"layers": 2, "hidden_size": 256, "embedding_size": 64, "dropout": 0.0},
        # 1.2e-2 won all four 80 s pairs against 8e-3, on one AVX2 thread and at two bfloat16 threads
        # (benchmarks/HISTORY.md#2026-12-05-the-tiny-presets-rate-issue-22).
        train={"batch_size": 32, "seq_len": 32, "learning_rate": 1.2e-2, "weight_decay": 0.1},
        # While the budget buys few tokens the smaller model wins by reading more text per second;
        # beyond this, without dropout, it overfits and small wins.
        up_to_tokens=100.0 * 39_000,
    ),
    "small": Preset(
        "2 x 384 {cell}, no dropout, 32 rows x 32 tokens: learns fastest in the first minutes",
        model={"layers": 2, "hidden_size": 384, "embedding_size": 128, "dropout": 0.0},
        train={"batch_size": 32, "seq_len": 32, "learning_rate": 6e-3, "weight_decay": 0.1},
        # small learns fastest in the first minutes, then overfits without dropout; from about
        # here medium, with dropout, does better.
        up_to_tokens=200.0 * 39_000,
    ),
    "medium": Preset(
        "2 x 512 {cell} with dropout 0.3 and weight decay 0.2, 32 rows x 64 tokens: keeps improving "
        "over ten minutes and more",
        model={"layers": 2, "hidden_size": 512, "embedding_size": 128, "dropout": 0.3},
        train={"batch_size": 32, "seq_len": 64, "learning_rate": 8e-3, "weight_decay": 0.2},
        up_to_tokens=math.inf,
    ),
}
# The preset whose training speed measures a machine (training/calibration.py).
CALIBRATION_PRESET = "small"
# Options that set a model's or run's shape: giving any of them turns the automatic preset off.
SHAPE_OPTIONS = {"layers", "hidden_size", "embedding_size", "dropout", "weight_drop", "embedding_dropout",
                 "batch_size", "seq_len", "learning_rate"}


# Training tokens per second of the calibration preset on the CPU the presets were measured on
# (2-core AMD EPYC, AVX-512 BF16): what a budget in seconds is taken to buy when nothing measured it
# (benchmarks/HISTORY.md#2026-11-30-the-preset-follows-the-machines-speed-issue-13).
REFERENCE_SPEED = 39_000.0


def preset_for_budget(seconds: float, tokens_per_second: float | None = None) -> str:
    """The preset that did best for the reference tokens `seconds` of training buy at
    `tokens_per_second` (the calibration preset's speed on this machine; default REFERENCE_SPEED)."""
    tokens = seconds * (tokens_per_second or REFERENCE_SPEED)
    return next(name for name, preset in PRESETS.items() if tokens <= preset.up_to_tokens)


def wants_automatic_preset(request: dict[str, Any], preset: str | None) -> bool:
    """No preset named, no shape option given and only a time limit: the budget chooses the shape."""
    return preset is None and not set(request) & SHAPE_OPTIONS and request.get("max_steps") is None \
        and request.get("epochs") is None


def apply_preset(
    name: str, model_config: ModelConfig, train_config: TrainConfig, keep: set[str] = frozenset()
) -> tuple[ModelConfig, TrainConfig]:
    """The configs with preset `name` filled in, except the fields named in `keep` (the user's own)."""
    if name not in PRESETS:
        raise OptionError("preset", f"must be one of {', '.join(PRESETS)}, not {name!r}")
    preset = PRESETS[name]
    model = {k: v for k, v in preset.model.items() if k not in keep}
    train = {k: v for k, v in preset.train.items() if k not in keep}
    return (
        dataclasses.replace(model_config, **model),
        dataclasses.replace(train_config, **train, preset=name),
    )


@dataclass(frozen=True)
class RunSettings:
    model: ModelConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    preset: str | None  # the preset that filled in the shape, if any
    preset_chosen_for_budget: bool  # True when no preset was named and the budget chose it
    notes: tuple[str, ...] = ()  # what the run's plan line should say of how these were settled


# The settings a resumed run may change: its limits and where it runs. Everything else is the run's own.
RESUMABLE_SETTINGS = ("max_steps", "epochs", "max_time", "device")


def _run_fields() -> dict[str, set[str]]:
    return {name: {f.name for f in dataclasses.fields(cls)} for name, cls in
            (("model", ModelConfig), ("tokenizer", TokenizerConfig), ("train", TrainConfig))}


def run_setting_names() -> set[str]:
    """Every field a training request may set: the model's, the tokenizer's and the run's (but
    TrainConfig.preset, which records the preset a request names apart)."""
    return set().union(*_run_fields().values()) - {"preset"}


def settings_for(request: dict[str, Any], preset: str | None = None,
                 tokens_per_second: float | None = None) -> RunSettings:
    """The configs for a training request, every policy applied: the fields in `request` (model,
    tokenizer and training fields alike, as a user set them) win; a preset fills in the shape,
    the one named, or, when no shape field is set and no step or epoch limit is given, the one
    measured best for the tokens the time budget buys at `tokens_per_second` (the calibration
    preset's speed here, training/calibration.py; the default budget when there is none); tied weights
    imply the plain stack unless skip connections are asked for. The CLI and the Python API
    both come through here, so the same request gives the same run."""
    fields = _run_fields()
    unknown = sorted(set(request) - run_setting_names() - {"preset"})
    if unknown:
        raise OptionError(unknown[0], "is not a training setting")
    parts = {name: {k: v for k, v in request.items() if k in names} for name, names in fields.items()}
    # The model's vocabulary comes from the tokenizer, and "vocab_size" is the subword tokenizer's.
    parts["model"].pop("vocab_size", None)
    train = TrainConfig(**parts["train"])
    chosen, for_budget = preset, False
    if wants_automatic_preset(request, chosen):
        chosen, for_budget = preset_for_budget(train.max_time or train.default_max_time, tokens_per_second), True
    model = ModelConfig(**parts["model"])
    if chosen is not None:
        model, train = apply_preset(chosen, model, train, keep=set(request))
    tokenizer = TokenizerConfig(**parts["tokenizer"])
    if "ngram_order" not in request and tokenizer.kind == "char" and not model.tie_weights:
        model = dataclasses.replace(model, ngram_order=CHAR_NGRAM_ORDER)
    return RunSettings(model, tokenizer, train, chosen, for_budget)


# --- fine-tuning: a run that starts from a trained model (`textgen train --init-from`) ----------------

# The fields that fix a model's shape: a fine-tuning run takes them from its base, and one given
# with another value is an error (the weights would not fit).
BASE_SHAPE_FIELDS = ("cell", "layers", "hidden_size", "embedding_size", "tie_weights", "skip_connections",
                     "ngram_order")
# The tokenizer's kind and word splitting are the base's too: its ids mean what they meant.
BASE_TOKENIZER_FIELDS = ("kind", "fold_spaces")
# Tokenizer fields that only learn a sentencepiece vocabulary: a subword base keeps its own (its
# byte fallback already spells any text), so these learn nothing new for it (and, as in any run,
# nothing for a char or word model).
SUBWORD_LEARNING_FIELDS = ("vocab_size", "subword_model", "subword_sample")
# Settings that tune how the base was trained, and are taken as they were unless given: the window,
# the batch and the regularisers suited the model, and suit it still on the new text.
INHERITED_MODEL_FIELDS = ("dropout", "weight_drop", "embedding_dropout")
INHERITED_TOKENIZER_FIELDS = ("max_vocab", "min_count", "documents")
INHERITED_TRAINING_FIELDS = ("batch_size", "seq_len", "weight_decay", "clip", "adam_beta1", "min_lr_ratio",
                             "ema_decay", "activation_penalty", "activation_change_penalty")
# A lower peak rate and a short warm-up: the weights are already good, so large first steps would
# only undo what the base learnt (Adam's moments start from zero, so its first steps are the
# largest). The peak is the base's own peak times this ratio; benchmarks/finetune.py --rates
# measures candidates side by side.
FINE_TUNING_LEARNING_RATE_RATIO = 0.3
FINE_TUNING_WARMUP_STEPS = 10
# A small text is overfit within seconds of fine-tuning: validating every this many steps keeps the
# best weights from before that, where five validations a run came too late to (benchmarks/HISTORY.md,
# 2026-12-05: fine-tuning from a trained model).
FINE_TUNING_EVAL_EVERY = 20
# A token the base never had gets the mean of the base's output rows, less this many nats, as its
# output row: at most e^-10 of an average token's probability, so the model starts where it was
# (the loss on the base's own text is unchanged), while the row still learns from the first step.
NEW_TOKEN_LOGIT_OFFSET = 10.0


@dataclass(frozen=True)
class BaseSettings:
    """What a fine-tuning run reads from its base checkpoint's config.json."""

    model: ModelConfig
    tokenizer: TokenizerConfig
    train: TrainConfig


def fine_tuning_settings(request: dict[str, Any], base: BaseSettings, preset: str | None = None) -> RunSettings:
    """The configs of a run that starts from `base`'s weights: its shape and tokenizer kind are the
    base's (a request that contradicts them is an OptionError naming the field and both values);
    its regularisers, window and batch the base's unless the request sets them; its peak learning
    rate the base's times FINE_TUNING_LEARNING_RATE_RATIO after FINE_TUNING_WARMUP_STEPS of
    warm-up, and a validation every FINE_TUNING_EVAL_EVERY steps, unless set; its limits and everything else the request's or the defaults. No preset
    applies: the shape is given."""
    if preset is not None:
        raise OptionError("preset", "chooses a model's shape, which a fine-tuning run takes from its base")
    fields = _run_fields()
    unknown = sorted(set(request) - run_setting_names())
    if unknown:
        raise OptionError(unknown[0], "is not a training setting")
    _check_base_fields(request, base.model, BASE_SHAPE_FIELDS)
    _check_base_fields(request, base.tokenizer, BASE_TOKENIZER_FIELDS)
    kept = lambda config, names: {name: getattr(config, name) for name in names}  # noqa: E731
    model = {**kept(base.model, BASE_SHAPE_FIELDS + INHERITED_MODEL_FIELDS),
             **{k: v for k, v in request.items() if k in fields["model"] and k != "vocab_size"}}
    tokenizer = {**kept(base.tokenizer, BASE_TOKENIZER_FIELDS + SUBWORD_LEARNING_FIELDS + INHERITED_TOKENIZER_FIELDS),
                 **{k: v for k, v in request.items() if k in INHERITED_TOKENIZER_FIELDS}}
    train = {**kept(base.train, INHERITED_TRAINING_FIELDS),
             "learning_rate": base.train.learning_rate * FINE_TUNING_LEARNING_RATE_RATIO,
             "warmup_steps": FINE_TUNING_WARMUP_STEPS, "eval_every": FINE_TUNING_EVAL_EVERY,
             **{k: v for k, v in request.items() if k in fields["train"]}}
    notes = ()
    learning = [name for name in SUBWORD_LEARNING_FIELDS if name in request and base.tokenizer.kind == "subword"]
    if learning:
        notes = (f"the base's subword vocabulary is kept (its byte fallback spells any text): "
                 f"{', '.join(learning)} learns nothing new",)
    return RunSettings(ModelConfig(**model), TokenizerConfig(**tokenizer), TrainConfig(**train), None, False, notes)


def _check_base_fields(request: dict[str, Any], base: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if name in request and request[name] != getattr(base, name):
            raise OptionError(name, f"is {getattr(base, name)!r} in the base model, not {request[name]!r}: a "
                                    "fine-tuning run keeps the shape and tokenizer of the model it starts from")


def sample_setting(default: Any, help: str, unset: str = "none") -> Any:
    """A SampleConfig field with what every front end shows for it: `help`, one sentence (the CLI
    option's help, the interactive loop's); `unset`, how a value of None reads."""
    return dataclasses.field(default=default, metadata={"help": help, "unset": unset})


@dataclass
class SampleConfig:
    """How text is drawn from a model. Each field is a setting every front end offers under its own
    name (Python keyword, CLI option, interactive :command), derived from these fields: a new rule
    is its code, its field here, and a test."""

    length: int = sample_setting(500, "Characters to generate per sample, whatever the tokenizer.")
    # The distribution is shaped in this order: repetition penalty, temperature, top-k, top-p.
    temperature: float = sample_setting(0.8, "Above 0; lower is safer, higher wilder.")
    top_k: int = sample_setting(40, "Draw from the k likeliest tokens (0 = all).")
    top_p: float = sample_setting(  # nucleus sampling
        1.0, "Then from the likeliest tokens that together reach this probability (1 = all).")
    greedy: bool = sample_setting(False, "Always the likeliest token (temperature, top-k and top-p unused).")
    # Divides positive logits (multiplies negative ones) of every token already in the text, as in CTRL.
    repetition_penalty: float = sample_setting(
        1.0, "Above 1 makes tokens already in the text less likely (1 = off); for word and subword models that loop.")
    stop: tuple[str, ...] = sample_setting(
        (), "End a sample where this text first appears, leaving it out (repeatable; \\n is a line break).")
    num_samples: int = sample_setting(1, "Samples, made together as one batch.")
    # None: a fresh seed, reported so the run can be repeated.
    seed: int | None = sample_setting(None, "Makes sampling repeatable.", unset="fresh each turn")
    unknown: str = sample_setting(
        "error", f"Seed-text symbols the model never saw (char, word): {' | '.join(UNKNOWN_POLICIES)}.")

    def __post_init__(self) -> None:
        # One string is one stop text, not a sequence of one-character stops; JSON gives a list.
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        check_sample_config(self)


def sample_settings() -> tuple[dataclasses.Field, ...]:
    """SampleConfig's fields: the sampling settings every front end offers."""
    return dataclasses.fields(SampleConfig)


# --- textgen serve ------------------------------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# OpenAI takes up to 4 stop texts; a few more cost nothing, but every stop is checked at every step
# for every row, so a request cannot bring a thousand.
MAX_STOPS = 16
MAX_LOGPROBS = 5  # OpenAI's own cap on alternatives per token

# What a request to textgen serve gets for the sampling settings it leaves out: OpenAI's defaults
# (16 tokens, temperature 1, nothing cut), since its clients expect them; SampleConfig's fill in the rest.
WIRE_DEFAULTS = {"length": 16, "temperature": 1.0, "top_k": 0}


def machine_max_batch() -> int:
    """Rows stepped together when --max-batch is not given: a recurrent step costs about as much
    for 16 rows as for one on a CPU core, so 16 per core, at most 64."""
    import os

    return max(1, min(64, 16 * (os.cpu_count() or 1)))


@dataclass
class ServeConfig:
    """How `textgen serve` (and the app the Python API hands out) accepts and bounds its work."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: no key asked for, allowed on a loopback host (or with insecure)
    insecure: bool = False  # the user means to serve a non-loopback host without a key
    max_batch: int = 0  # rows stepped together; 0: machine_max_batch()
    max_queue: int = 256  # requests waiting for a row; past it, 503 with Retry-After
    max_tokens_limit: int = 4096  # the largest max_tokens a request may ask for
    max_prompt: int = 200_000  # characters in a prompt (all the messages of a chat, laid out)
    max_body: int = 1_000_000  # bytes in a request body; 413 past it
    state_cache_mb: float = 32.0  # recurrent states of recent prompts: about 3,000 of a 2 x 512 LSTM
    drain_timeout: float = 10.0  # seconds running streams may go on after SIGTERM or Ctrl-C
    reload: bool = False  # swap in a checkpoint's new best weights while serving
    workers: int = 1  # server processes on this machine

    def __post_init__(self) -> None:
        if self.max_batch == 0:
            self.max_batch = machine_max_batch()
        check_serve_config(self)


def check_serve_config(config: ServeConfig) -> None:
    checks = [
        ("port", 1 <= config.port <= 65535, "between 1 and 65535"),
        ("max_batch", 1 <= config.max_batch <= MAX_NUM_SAMPLES, f"between 1 and {MAX_NUM_SAMPLES}"),
        ("max_queue", config.max_queue >= 1, "at least 1"),
        ("max_tokens_limit", config.max_tokens_limit >= 1, "at least 1"),
        ("max_prompt", config.max_prompt >= 1, "at least 1 character"),
        ("max_body", config.max_body >= 1024, "at least 1024 bytes"),
        ("state_cache_mb", 0 <= config.state_cache_mb < math.inf, "0 (off) or more, and finite"),
        ("drain_timeout", 0 <= config.drain_timeout < math.inf, "0 or more seconds, and finite"),
        ("workers", config.workers >= 1, "at least 1"),
        ("api_key", config.api_key is None or config.api_key.strip() != "", "must not be empty"),
    ]
    for field, ok, requirement in checks:
        _require(field, ok, requirement if requirement.startswith("must") else f"must be {requirement}")
    if config.host not in LOOPBACK_HOSTS and config.api_key is None and not config.insecure:
        raise SettingError(f"serving {config.host} to the network without {{api_key}} lets anyone there use it; "
                           "give a key, or {insecure} if that is meant", "api_key", "insecure")


def unescape(text: str) -> str:
    r"""A stop text as typed on a command line: \n is a line break, \t a tab, \\ a backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


# The checks each config runs on itself; they are torch-free, so the CLI runs them before it
# imports torch.


def check_tokenizer_config(config: TokenizerConfig) -> None:
    _one_of("kind", config.kind, TOKENIZER_KINDS)
    _one_of("subword_model", config.subword_model, SUBWORD_MODELS)
    _one_of("documents", config.documents, DOCUMENT_MODES)
    _between("max_vocab", config.max_vocab, 2, MAX_VOCAB)
    _between("min_count", config.min_count, 1, math.inf)
    _between("vocab_size", config.vocab_size, MIN_SUBWORD_VOCAB, MAX_VOCAB)
    _require("subword_sample", config.subword_sample >= 0, f"must be 0 (all lines) or more, got {config.subword_sample}")


def fitted_ngram_order(order: int, vocab_size: int) -> tuple[int, str | None]:
    """The n-gram order a run with this vocabulary can have, and why, where it is lower than
    `order`: none beyond MAX_NGRAM_VOCAB symbols, and no longer than its contexts' keys allow."""
    if not order:
        return 0, None
    if vocab_size > MAX_NGRAM_VOCAB:
        return 0, (f"no n-gram counts: {vocab_size:,} symbols are more than they suit "
                   f"(at most {MAX_NGRAM_VOCAB})")
    fitted = order
    while fitted > 1 and vocab_size**fitted * fitted >= 2**62:  # the keys: (context, token) * order + k
        fitted -= 1
    if fitted < 2:
        return 0, "no n-gram counts: the vocabulary is too large for them"
    if fitted < order:
        return fitted, f"n-gram counts of order {fitted}, not {order}: longer keys would not fit 62 bits"
    return order, None


def check_model_config(config: ModelConfig) -> None:
    """Reject shapes that cannot be built."""
    _one_of("cell", config.cell, CELLS)
    _between("layers", config.layers, 1, 64)
    _between("hidden_size", config.hidden_size, 1, MAX_LAYER_SIZE)
    _between("embedding_size", config.embedding_size, 1, MAX_LAYER_SIZE)
    for name in ("dropout", "weight_drop", "embedding_dropout"):
        value = getattr(config, name)
        _require(name, 0.0 <= value < 1.0, f"must be in [0, 1), got {value}")
    if config.weight_drop and config.cell in INPUT_GATED_CELLS:
        raise OptionError("weight_drop", f"drops links of the hidden-to-hidden matrices, and {{cell}} {config.cell} "
                                         "has none (its gates read the input alone): use {dropout} instead",
                          "cell", "dropout")
    if config.tie_weights and config.hidden_size != config.embedding_size:
        raise OptionError("tie_weights", "needs the embedding size equal to the hidden size "
                                         f"(got {config.embedding_size} and {config.hidden_size})")
    _require("ngram_order", config.ngram_order == 0 or 2 <= config.ngram_order <= MAX_NGRAM_ORDER,
             f"must be 0 (none) or between 2 and {MAX_NGRAM_ORDER}, got {config.ngram_order}")
    if config.ngram_order and config.tie_weights:
        raise OptionError("ngram_order", "cannot be combined with {tie_weights} (the output layer also gives the "
                                         "gate between the network and the counts)", "tie_weights")
    _, why = fitted_ngram_order(config.ngram_order, config.vocab_size) if config.vocab_size else (0, None)
    if why:
        raise OptionError("ngram_order", f"{config.ngram_order} does not suit a vocabulary of "
                                         f"{config.vocab_size:,} tokens: {why}")
    if config.tie_weights and config.skip_connections:
        raise OptionError("tie_weights", "cannot be combined with skip connections (with them the output layer "
                                         "reads every layer, not the top one alone)")


def check_train_config(config: TrainConfig) -> None:
    checks = [
        ("seq_len", config.seq_len >= 1, "at least 1"),
        ("batch_size", config.batch_size >= 1, "at least 1"),
        ("learning_rate", 0 < config.learning_rate < math.inf, "greater than 0, and finite"),
        ("clip", 0 <= config.clip <= math.inf, "0 (off) or more"),
        ("weight_decay", 0 <= config.weight_decay < math.inf, "0 (off) or more, and finite"),
        ("adam_beta1", 0.0 <= config.adam_beta1 < 1.0, "in [0, 1)"),
        ("optimizer", config.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ("muon_momentum", 0.0 <= config.muon_momentum < 1.0, "in [0, 1)"),
        ("val_fraction", 0.0 <= config.val_fraction <= 0.5, "between 0 and 0.5"),
        ("max_steps", config.max_steps is None or config.max_steps >= 1, "at least 1"),
        ("epochs", config.epochs is None or 0 < config.epochs < math.inf, "greater than 0, and finite"),
        ("max_time", config.max_time is None or 0 < config.max_time < math.inf, "greater than 0 seconds, and finite"),
        ("eval_every", config.eval_every >= 0, "0 (automatic) or more"),
        ("seed", 0 <= config.seed <= MAX_SEED, f"between 0 and {MAX_SEED}"),
        ("precision", config.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        ("ema_decay", 0.0 <= config.ema_decay < 1.0, "in [0, 1)"),
        ("activation_penalty", 0 <= config.activation_penalty < math.inf, "0 (off) or more, and finite"),
        ("activation_change_penalty", 0 <= config.activation_change_penalty < math.inf,
         "0 (off) or more, and finite"),
        ("patience", config.patience >= 0, "0 (off) or more"),
    ]
    for field, ok, requirement in checks:
        _require(field, ok, f"must be {requirement}")


def check_sample_config(config: SampleConfig) -> None:
    _require("temperature", 0 < config.temperature < math.inf,
             f"must be greater than 0 (and finite), got {config.temperature}")
    _require("top_k", config.top_k >= 0, f"must be 0 (off) or more, got {config.top_k}")
    _require("top_p", 0 < config.top_p <= 1, f"must be greater than 0 and at most 1 (1 = off), got {config.top_p}")
    _require("repetition_penalty", 1 <= config.repetition_penalty < math.inf,
             f"must be at least 1 (1 = off; 1.1 to 1.3 is typical), got {config.repetition_penalty}")
    _require("stop", all(isinstance(text, str) and text for text in config.stop), "needs a non-empty text")
    _require("length", config.length >= 1, f"must be at least 1 character, got {config.length}")
    _require("num_samples", 1 <= config.num_samples <= MAX_NUM_SAMPLES,
             f"must be at least 1 and at most {MAX_NUM_SAMPLES}, got {config.num_samples}")
    _require("seed", config.seed is None or 0 <= config.seed <= MAX_SEED,
             f"must be between 0 and {MAX_SEED}, got {config.seed}")
    _one_of("unknown", config.unknown, UNKNOWN_POLICIES)


def _require(field: str, ok: bool, problem: str) -> None:
    if not ok:  # NaN fails every comparison, so it lands here too
        raise OptionError(field, problem)


def _one_of(field: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(field, value in choices, f"must be one of {', '.join(choices)}, not {value!r}")


def _between(field: str, value: int, least: float, most: float) -> None:
    if not value >= least:
        raise OptionError(field, f"must be at least {least:,}, got {value}")
    if not value <= most:
        raise OptionError(field, f"must be at most {most:,}, got {value}")


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config from JSON, ignoring keys a newer or older textgen wrote."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
