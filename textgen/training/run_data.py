"""Laying a run's text out for training: the training part as batches (a stream or documents),
the held-out part as a validation set that scores a model, both behind one interface. The text is
a string (a small corpus) or a prepared corpus's memory-mapped ids (a big one)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from textgen.data import (
    Batches, DocumentBatches, SegmentBatches, StreamBatches, split_documents, window_for_predictions,
)
from textgen.data.prepare import HeldOut, PreparedCorpus, held_out
from textgen.evaluation import documents_loss, held_out_loss, total_loss
from textgen.model import RNNLanguageModel
from textgen.tokenizers import Tokenizer, end_marker
from textgen.training.distributed import SINGLE, Group


@dataclass
class StreamValidation:
    """The held-out text as one stream, primed by the last token of the training part."""

    ids: torch.Tensor
    context_id: int
    characters: int

    @property
    def tokens(self) -> int:
        return self.ids.numel()

    def score(self, model: RNNLanguageModel, group: Group = SINGLE) -> tuple[float, int]:
        """Summed over every process, each scoring its share of the rows."""
        nats, count = total_loss(model, self.ids, self.context_id, share=(group.rank, group.world))
        return group.sum([nats])[0], count


@dataclass
class DocumentValidation:
    """The held-out documents, each read from a fresh state, end marker included."""

    documents: list[list[int]]
    end_id: int
    characters: int

    @property
    def tokens(self) -> int:
        return sum(len(ids) + 1 for ids in self.documents)

    def score(self, model: RNNLanguageModel, group: Group = SINGLE) -> tuple[float, int]:
        return documents_loss(model, self.documents, self.end_id)  # documents train in one process only


@dataclass
class PreparedValidation:
    """A prepared corpus's held-out part: one stream, or files and documents each from a fresh state."""

    part: HeldOut

    @property
    def tokens(self) -> int:
        return len(self.part.ids)

    @property
    def characters(self) -> int:
        return self.part.characters

    def score(self, model: RNNLanguageModel, group: Group = SINGLE) -> tuple[float, int]:
        """Summed over every process, each scoring its share of the rows."""
        nats, count = held_out_loss(model, self.part, share=(group.rank, group.world))
        return group.sum([nats])[0], count


Validation = StreamValidation | DocumentValidation | PreparedValidation


@dataclass
class RunData:
    batches: Batches | SegmentBatches
    validation: Validation
    notes: list[str] = field(default_factory=list)  # for the run's plan line


def lay_out_run_data(train_text: str, val_text: str, tokenizer: Tokenizer, documents: str, batch_size: int,
                     seq_len: int, seed: int, device: torch.device, group: Group = SINGLE) -> RunData:
    if documents == "none":
        return _stream(train_text, val_text, tokenizer, batch_size, seq_len, device, group)
    encode = tokenizer.encode
    train_documents = [encode(d) for d in split_documents(train_text, documents)]
    validation = DocumentValidation([encode(d) for d in split_documents(val_text, documents)],
                                    tokenizer.end_id, len(val_text))
    batches = DocumentBatches(train_documents, tokenizer.end_id, batch_size, seq_len, seed)
    note = (f"{len(train_documents):,} training and {len(validation.documents):,} validation "
            f"documents ({documents}), each read from a fresh state")
    return RunData(batches, validation, [note])


def _stream(train_text: str, val_text: str, tokenizer: Tokenizer, batch_size: int, seq_len: int,
            device: torch.device, group: Group) -> RunData:
    train_ids = _as_tensor(tokenizer.encode(train_text))
    batches = StreamBatches(train_ids, batch_size, seq_len, device, group.rank, group.world)
    notes = []
    if batches.global_rows < batch_size:
        notes.append(f"batch size lowered to {batches.global_rows} so every row holds at least one window")
    validation = StreamValidation(_as_tensor(tokenizer.encode(val_text)), int(train_ids[-1]), len(val_text))
    return RunData(batches, validation, notes)


def lay_out_prepared(prepared: PreparedCorpus, batch_size: int, seq_len: int, seed: int, device: torch.device,
                     group: Group = SINGLE) -> RunData:
    """A prepared corpus's ids as batches read from the memory map (one stream; or its files, each
    a stream of its own; or its documents, in a new order every epoch), and a validation set of at
    most MAX_VALIDATION_TOKENS held-out tokens."""
    segments, documents = prepared.train_segments, end_marker(prepared.tokenizer) is not None
    notes = []
    if len(segments) == 1 and not documents:
        batches: StreamBatches | SegmentBatches = StreamBatches(prepared.train_ids, batch_size, seq_len, device,
                                                                group.rank, group.world)
    else:
        lengths = segments[:, 1] - segments[:, 0] - 1
        window = window_for_predictions(int(lengths.max(initial=1)), seq_len) if documents else seq_len
        batches = SegmentBatches(prepared.train_ids, segments, batch_size, window, device, group.rank, group.world,
                                 documents, seed)
        what = "documents, each" if documents else "files, each a stream"
        notes.append(f"{len(segments):,} training {what} read from a fresh state")
    if batches.global_rows < batch_size:
        notes.append(f"batch size lowered to {batches.global_rows} so every row holds at least one window")
    part = held_out(prepared)
    if part.note:
        notes.append(part.note)
    return RunData(batches, PreparedValidation(part), notes)


def _as_tensor(ids: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))
