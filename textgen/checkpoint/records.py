"""The typed records of a checkpoint's config.json and metrics.jsonl, each with its one reader
(`from_json`) and its one writer (`to_json`).

    config.json  {"format", "format_version", "model": ModelConfig, "tokenizer": TokenizerConfig,
                  "corpus": CorpusRecord, "training": TrainingRecord, "best": BestRecord,
                  "base": LineageRecord (a fine-tuning run only)}
    metrics.jsonl  one MetricsRow per validation

A reader takes what an older or newer textgen wrote: unknown keys are ignored, missing ones take
their defaults, and a value of the wrong type is a TextgenError saying the file is corrupt.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from textgen.config import TrainConfig, to_dict
from textgen.errors import TextgenError

R = TypeVar("R")

# The JSON types a field of each kind may hold (a JSON integer is a fine float).
_ACCEPTS: dict[Any, tuple[type, ...]] = {
    "str | None": (str, type(None)), "int": (int,), "int | None": (int, type(None)), "float": (int, float),
    "float | None": (int, float, type(None)), "str": (str,), "bool": (bool,), "bool | None": (bool, type(None)),
}


def read_record(cls: type[R], data: Any, where: str) -> R:
    """`cls` (a dataclass) from a JSON object, checking each known field's type; unknown keys are
    ignored, missing ones take their defaults. A wrong type is a TextgenError naming `where`.field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TextgenError(f"{where} is not an object")
    values = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name not in data:
            continue
        value = data[spec.name]
        accepted = _ACCEPTS.get(spec.type)
        if accepted and (not isinstance(value, accepted) or isinstance(value, bool) and bool not in accepted):
            raise TextgenError(f"{where}.{spec.name} has the wrong type")
        values[spec.name] = value
    return cls(**values)


def _without_none(record: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(record).items() if v is not None}


@dataclass
class CorpusRecord:
    """Where the training text came from, so `evaluate` and `--resume` can find it again unchanged."""

    source: str | None = None  # as the user gave it: a path or a corpus name
    name: str | None = None  # a named corpus (shakespeare, python-docs)
    path: str | None = None  # an absolute path, for a file
    sha256: str | None = None  # of the text, to notice that it changed
    encoding: str | None = "utf-8"
    characters: int = 0
    val_fraction: float = 0.0
    train_characters: int | None = None
    val_characters: int | None = None
    documents: str = "none"
    streamed: bool = False  # prepared a block at a time into the id cache (a folder, a glob, a big file)

    @classmethod
    def from_json(cls, data: Any) -> CorpusRecord:
        return read_record(cls, data, "corpus")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainingRecord:
    """The run's settings and how far it got."""

    config: TrainConfig = field(default_factory=TrainConfig)
    steps: int = 0
    elapsed: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> TrainingRecord:
        from textgen.config import from_dict

        counts = read_record(_Counts, data, "training")
        try:  # adam_beta1 0.9: runs from before the option
            config = from_dict(TrainConfig, {"adam_beta1": 0.9, **(data or {})})
        except (TextgenError, TypeError, ValueError) as error:
            raise TextgenError(f"training settings: {error}") from None
        return cls(config, counts.steps, counts.elapsed)

    def to_json(self) -> dict[str, Any]:
        return {**to_dict(self.config), "steps": self.steps, "elapsed": round(self.elapsed, 3)}


@dataclass
class _Counts:
    steps: int = 0
    elapsed: float = 0.0


@dataclass
class MetricsRow:
    """One validation: where the run stood and what the held-out text scored (no val_* fields when
    nothing was held out)."""

    step: int
    epoch: float = 0.0
    elapsed: float = 0.0
    train_loss: float | None = None  # the mean since the previous validation
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    val_loss: float | None = None
    val_bits_per_char: float | None = None
    val_perplexity: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> MetricsRow:
        row = read_record(cls, data, "metrics row")
        if not isinstance((data or {}).get("step"), int):
            raise TextgenError("metrics row has no step")
        return row

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        for name in ("val_loss", "val_bits_per_char", "val_perplexity"):
            if row[name] is None:
                del row[name]
        return row


@dataclass
class BestRecord:
    """The validation whose weights the checkpoint holds."""

    step: int | None = None
    elapsed: float | None = None
    val_loss: float | None = None
    val_bits_per_char: float | None = None
    val_perplexity: float | None = None
    train_loss: float | None = None

    @classmethod
    def of(cls, row: MetricsRow) -> BestRecord:
        return cls(row.step, row.elapsed, row.val_loss, row.val_bits_per_char, row.val_perplexity, row.train_loss)

    @classmethod
    def from_json(cls, data: Any) -> BestRecord:
        return read_record(cls, data, "best")

    def to_json(self) -> dict[str, Any]:
        return _without_none(self)

    @property
    def is_known(self) -> bool:
        return self.val_loss is not None and not math.isnan(self.val_loss)


@dataclass
class LineageRecord:
    """The checkpoint a fine-tuning run started from: where it was, a hash of the weights it gave,
    what it was trained on, and its own base, if it was fine-tuned too."""

    path: str | None = None  # the base checkpoint, as an absolute path
    weights_sha256: str | None = None  # of its model.safetensors when the run read it
    corpus: str | None = None  # the text the base was trained on, as its record names it
    steps: int = 0  # how long the base trained
    base: LineageRecord | None = None

    @classmethod
    def from_json(cls, data: Any, depth: int = 0) -> LineageRecord | None:
        if data is None:
            return None
        if depth > _MAX_LINEAGE:
            raise TextgenError("base: its lineage goes deeper than any run makes")
        record = read_record(cls, {k: v for k, v in data.items() if k != "base"} if isinstance(data, dict) else data,
                             "base")
        record.base = cls.from_json(data.get("base"), depth + 1)
        return record

    def to_json(self) -> dict[str, Any]:
        return {**_without_none(dataclasses.replace(self, base=None)),
                **({"base": self.base.to_json()} if self.base else {})}

    def generations(self) -> list[LineageRecord]:
        """This base, its base, and so on, nearest first."""
        chain, record = [], self
        while record is not None:
            chain.append(record)
            record = record.base
        return chain


_MAX_LINEAGE = 100  # a cycle in a hand-edited file must not recurse forever
