"""The on-disk checkpoint format: a directory written atomically and read back without running code.

    <checkpoint>/
      config.json        format version, model and tokenizer settings, corpus, training settings, best figures
      model.safetensors  the best-by-validation weights (safetensors holds tensors only, so loading runs no code)
      tokenizer.json     (char, word) or tokenizer.model (subword): the tokenizer's own files
      metrics.jsonl      one JSON object per evaluation
      trainer.safetensors  where the run stands (latest weights, optimiser, data position, random
                         state), for `textgen train --resume`; sampling never reads it

A save writes a hidden sibling folder and renames it into place, so a crash or a
full disk mid-save leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from textgen.checkpoint import atomic
from textgen.checkpoint.records import (
    BestRecord, CorpusRecord, LineageRecord, MetricsRow, TrainingRecord, read_record,
)
from textgen.config import ModelConfig, SettingError, TokenizerConfig, to_dict
from textgen.errors import TextgenError

FORMAT_NAME = "textgen-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
TRAINER_FILE = "trainer.safetensors"
TRAINER_FORMAT = "textgen-trainer-state"



@dataclass
class CheckpointInfo:
    """Everything in config.json."""

    model: ModelConfig
    tokenizer: TokenizerConfig
    corpus: CorpusRecord = field(default_factory=CorpusRecord)
    training: TrainingRecord = field(default_factory=TrainingRecord)
    best: BestRecord = field(default_factory=BestRecord)
    base: LineageRecord | None = None  # the checkpoint a fine-tuning run started from

    def to_json(self) -> dict[str, Any]:
        lineage = {"base": self.base.to_json()} if self.base else {}
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": to_dict(self.model),
            "tokenizer": to_dict(self.tokenizer),
            "corpus": self.corpus.to_json(),
            "training": self.training.to_json(),
            "best": self.best.to_json(),
            **lineage,
        }


@dataclass
class TrainerState:
    """What `--resume` needs beyond the checkpoint: tensors (weights, optimiser moments, hidden
    state, random state) and a JSON record of the run's progress."""

    tensors: dict[str, Any]
    record: dict[str, Any]


def is_checkpoint(directory: Path) -> bool:
    return (directory / CONFIG_FILE).is_file()


def check_output_directory(directory: Path, overwrite: bool = False) -> None:
    """Refuse, before any work is done, an output that would overwrite something the user has."""
    directory = Path(directory)
    if not directory.exists():
        parent = directory.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise TextgenError(f"cannot make {directory}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TextgenError(f"cannot make {directory}: {parent} is not writable")
        return
    if not directory.is_dir():
        raise SettingError(f"{directory} is a file; choose another {{out}} for the checkpoint", "out")
    if is_checkpoint(directory):
        if not overwrite:
            raise SettingError(f"{directory} already holds a checkpoint; pass {{overwrite}} to replace it, "
                               "or choose another {out}", "overwrite", "out")
    elif any(directory.iterdir()):
        raise SettingError(f"{directory} exists and is not a textgen checkpoint; choose another {{out}}", "out")


def read_info(directory: Path) -> CheckpointInfo:
    """Read and check config.json; every way it can be wrong is a one-line TextgenError."""
    directory = Path(directory)
    if not directory.exists():
        leftover = _sibling(directory, "old")
        hint = f" (an interrupted save left the previous one at {leftover})" if leftover.exists() else ""
        raise TextgenError(f"no such checkpoint: {directory}{hint}")
    if not directory.is_dir():
        raise TextgenError(f"{directory} is a file; a checkpoint is a directory made by `textgen train`")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise TextgenError(f"{directory} is not a textgen checkpoint (it has no {CONFIG_FILE})")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TextgenError(f"{config_path} is corrupt: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise TextgenError(f"{directory} is not a textgen checkpoint ({CONFIG_FILE} is from something else)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise TextgenError(
            f"{directory} has checkpoint format {version}; this textgen reads format {FORMAT_VERSION}"
        )
    sections = {name: data.get(name) for name in ("model", "tokenizer", "corpus", "training", "best", "base")}
    for name, section in sections.items():
        if not isinstance(section, dict) and not (section is None and name not in ("model", "tokenizer")):
            raise TextgenError(f"{config_path} is corrupt: its {name!r} section is not an object")
    # Checkpoints from before skip connections existed were built without them.
    model_section = {"skip_connections": False, **sections["model"]}
    try:
        return CheckpointInfo(
            model=read_record(ModelConfig, model_section, "model"),
            tokenizer=read_record(TokenizerConfig, sections["tokenizer"], "tokenizer"),
            corpus=CorpusRecord.from_json(sections["corpus"]),
            training=TrainingRecord.from_json(sections["training"]),
            best=BestRecord.from_json(sections["best"]),
            base=LineageRecord.from_json(sections["base"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TextgenError(f"{config_path} is corrupt: missing or bad field {error}") from None
    except TextgenError as error:  # a setting out of range: the file, not the user, is at fault
        raise TextgenError(f"{config_path} is corrupt: {error}") from None


def read_metrics(directory: Path) -> list[MetricsRow]:
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(MetricsRow.from_json(json.loads(line)))
        except (json.JSONDecodeError, TextgenError, TypeError):
            continue  # a damaged line costs one point of a chart, not the checkpoint
    return rows


def save_checkpoint(
    directory: Path,
    model: Any,
    tokenizer: Any,
    info: CheckpointInfo,
    metrics: list[MetricsRow],
    trainer: TrainerState | None = None,
) -> None:
    """Write the whole checkpoint beside `directory`, then swap it in."""
    from safetensors.torch import save_model

    directory = Path(directory)
    recover_interrupted_save(directory)
    check_output_directory(directory, overwrite=True)
    had_previous = is_checkpoint(directory)
    temporary = _sibling(directory, "tmp")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_model(model, str(temporary / WEIGHTS_FILE))
        tokenizer.save(temporary)
        for name, text in _records(info, metrics).items():
            (temporary / name).write_text(text, encoding="utf-8")
        if trainer is not None:
            _write_trainer_state(temporary / TRAINER_FILE, trainer)
        for path in temporary.iterdir():
            atomic.fsync(path)
        atomic.replace_folder(temporary, directory, _sibling(directory, "old"))
    except Exception as error:
        if not _is_write_failure(error):
            raise
        shutil.rmtree(temporary, ignore_errors=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        kept = "; the previous checkpoint there is unchanged" if had_previous else ""
        raise TextgenError(f"could not save the checkpoint to {directory}: {reason}{kept}") from None


# A reader that meets a checkpoint being swapped for a newer one by a training run tries again;
# the swap is two renames, so a few short waits always find one whole checkpoint.
_READ_ATTEMPTS = 20
_READ_PAUSE = 0.05
T = TypeVar("T")


def read_whole(directory: Path, read: Callable[[Path], T]) -> T:
    """`read(folder)` of one whole checkpoint, safe while a run trains into `directory`: a read that
    met a save in progress is done again, so what comes back never mixes the config of one save
    with the weights of the next. A save killed between its renames is read where it was left."""
    directory = Path(directory)
    for attempt in range(_READ_ATTEMPTS):
        before = _identity(directory)
        try:
            result = read(_readable(directory))
        except TextgenError:
            if attempt + 1 < _READ_ATTEMPTS and _being_swapped(directory, before):
                time.sleep(_READ_PAUSE)
                continue
            raise
        if _identity(directory) == before:
            return result
        time.sleep(_READ_PAUSE)
    raise TextgenError(f"{directory} kept changing while it was read; try again when its run has saved")


def _readable(directory: Path) -> Path:
    """`directory`, or the copy a save killed between its two renames left beside it."""
    previous = _sibling(directory, "old")
    if not directory.exists() and is_checkpoint(previous):
        return previous
    return directory


def _identity(directory: Path) -> tuple[int, int, int] | None:
    """Which folder is at `directory` now. The inode alone is not enough: a folder removed by one
    save frees its number for the next; a rename changes the ctime, so the pair tells them apart."""
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_ctime_ns


def _being_swapped(directory: Path, before: tuple[int, int, int] | None) -> bool:
    """Whether a failed read may have met a save in progress rather than a broken checkpoint."""
    return _identity(directory) != before or (before is None and _sibling(directory, "old").exists())


def update_records(directory: Path, info: CheckpointInfo, metrics: list[MetricsRow]) -> None:
    """Rewrite config.json and metrics.jsonl of an existing checkpoint, leaving its weights alone
    (an evaluation that did not beat the best is still worth recording)."""
    directory = Path(directory)
    if not is_checkpoint(directory):
        return
    for name, text in _records(info, metrics).items():
        try:
            atomic.write_text(directory / name, text)
        except OSError:
            pass  # the older record stays whole and readable


def save_trainer_state(directory: Path, trainer: TrainerState) -> None:
    """Replace the trainer state of an existing checkpoint in one rename; a failed write keeps the old one."""
    try:
        with atomic.replacing(Path(directory) / TRAINER_FILE) as temporary:
            _write_trainer_state(temporary, trainer)
    except Exception as error:
        if not _is_write_failure(error):
            raise
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise TextgenError(f"could not save the training state to {directory}: {reason}; "
                           "the previous one there is unchanged") from None


def load_trainer_state(directory: Path) -> TrainerState:
    """Read what `--resume` needs; a missing, damaged or foreign file is a TextgenError."""
    from safetensors import safe_open

    path = Path(directory) / TRAINER_FILE
    if not path.is_file():
        raise TextgenError(
            f"{directory} cannot be resumed: it has no {TRAINER_FILE} (it was made by an older textgen, "
            "or the file was removed); start a new run"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != TRAINER_FORMAT:
                raise ValueError("it is not a textgen trainer state")
            record = json.loads(metadata["record"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TextgenError(f"{path} is corrupt: {first_line}") from None
    if not isinstance(record, dict) or not isinstance(record.get("progress"), dict):
        raise TextgenError(f"{path} is corrupt: its record has no progress")
    return TrainerState(tensors=tensors, record=record)


def _write_trainer_state(path: Path, trainer: TrainerState) -> None:
    from safetensors.torch import save_file

    metadata = {"format": TRAINER_FORMAT, "record": json.dumps(trainer.record)}
    save_file(trainer.tensors, str(path), metadata=metadata)


def weights_sha256(directory: Path) -> str:
    """The SHA-256 of a checkpoint's weights file: what a fine-tuning run records of its base."""
    import hashlib

    path = Path(directory) / WEIGHTS_FILE
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise TextgenError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def check_vocabulary(directory: Path, tokenizer: Any, info: CheckpointInfo) -> None:
    """The tokenizer's files and config.json must agree on the vocabulary's size."""
    if tokenizer.vocab_size != info.model.vocab_size:
        raise TextgenError(
            f"{directory} is inconsistent: its tokenizer has {tokenizer.vocab_size} tokens, "
            f"its model {info.model.vocab_size}"
        )


def load_weights(model: Any, directory: Path) -> None:
    """Fill `model` with the checkpoint's weights; a damaged or mismatched file is a TextgenError."""
    from safetensors.torch import load_model

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise TextgenError(f"{directory} is an incomplete checkpoint: {WEIGHTS_FILE} is missing")
    try:
        _attach_tables(model, path)
        load_model(model, str(path), strict=True, device=str(model.device))
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TextgenError(f"{path} is corrupt or does not match its config.json: {first_line}") from None


def _attach_tables(model: Any, path: Path) -> None:
    """Tensors a model must hold before its weights can be loaded into it (n-gram counts, whose
    sizes depend on the text counted), read from the weights file and handed to the model."""
    names = model.tables_to_read() if hasattr(model, "tables_to_read") else []
    if names:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            model.attach_tables({name: handle.get_tensor(name) for name in names})


def _records(info: CheckpointInfo, metrics: list[MetricsRow]) -> dict[str, str]:
    return {
        CONFIG_FILE: json.dumps(info.to_json(), indent=2, ensure_ascii=False) + "\n",
        METRICS_FILE: "".join(json.dumps(row.to_json()) + "\n" for row in metrics),
    }


def _is_write_failure(error: Exception) -> bool:
    """OSError, or safetensors' own error type, which is how it reports a failed write (disk full)."""
    return isinstance(error, OSError) or type(error).__name__ == "SafetensorError"


def _sibling(directory: Path, tag: str) -> Path:
    return directory.parent / f".{directory.name}.{tag}"


def recover_interrupted_save(directory: Path) -> None:
    """Put back the checkpoint a save killed between its two renames left aside, and remove what
    a killed save left half-written. Call it only while holding the run lock (textgen.locking)."""
    directory = Path(directory)
    previous, temporary = _sibling(directory, "old"), _sibling(directory, "tmp")
    try:
        if not directory.exists() and is_checkpoint(previous):
            os.replace(previous, directory)
        shutil.rmtree(temporary, ignore_errors=True)
        if directory.exists():
            shutil.rmtree(previous, ignore_errors=True)
    except OSError:
        pass  # leftovers are ignored by readers; the next save tries again
