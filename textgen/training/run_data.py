"""Laying a run's text out for training: the training part as batches (a stream or documents),
the held-out part as a validation set that scores a model, both behind one interface. The text is
a string (a small corpus) or a prepared corpus's memory-mapped ids (a big one); training_text()
takes either, so the loop never asks which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from textgen.checkpoint.records import CorpusRecord
from textgen.config import TokenizerConfig, TrainConfig
from textgen.data import (
    Batches, DocumentBatches, SegmentBatches, StreamBatches, split_documents, split_text, window_for_predictions,
)
from textgen.data.corpus import Corpus, recorded_corpus
from textgen.data.prepare import HeldOut, PreparedCorpus, check_same_vocabulary, held_out, recorded_prepared
from textgen.devices import resolve_device
from textgen.errors import TextgenError
from textgen.evaluation import documents_loss, held_out_loss, total_loss
from textgen.model import RNNLanguageModel
from textgen.tokenizers import Tokenizer, build_tokenizer, end_marker, grown_tokenizer, tokenizer_kind
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
    # The first `limit` training ids as one sequence (documents joined by their marker), read
    # only when n-gram counts are wanted.
    ids_to_count: Callable[[int], torch.Tensor]
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

    def joined(limit: int) -> torch.Tensor:
        return _as_tensor([token for ids in train_documents for token in (tokenizer.end_id, *ids)]
                          + [tokenizer.end_id])[:limit]

    return RunData(batches, validation, joined, [note])


def _stream(train_text: str, val_text: str, tokenizer: Tokenizer, batch_size: int, seq_len: int,
            device: torch.device, group: Group) -> RunData:
    train_ids = _as_tensor(tokenizer.encode(train_text))
    batches = StreamBatches(train_ids, batch_size, seq_len, device, group.rank, group.world)
    notes = []
    if batches.global_rows < batch_size:
        notes.append(f"batch size lowered to {batches.global_rows} so every row holds at least one window")
    validation = StreamValidation(_as_tensor(tokenizer.encode(val_text)), int(train_ids[-1]), len(val_text))
    return RunData(batches, validation, lambda limit: train_ids[:limit], notes)


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
    # The slice of the memory map is read, not the whole of it.
    return RunData(batches, PreparedValidation(part),
                   lambda limit: torch.from_numpy(np.asarray(prepared.train_ids[:limit], dtype=np.int64)), notes)


def _as_tensor(ids: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64))


# --- the text of a run, whatever the corpus -------------------------------------------------------


@dataclass
class TrainingText:
    """What a run learns from: the record of where the text came from, its tokenizer, and the text
    laid out as batches and a validation set."""

    record: CorpusRecord
    tokenizer: Tokenizer
    data: RunData


@dataclass(frozen=True)
class SavedText:
    """What a checkpoint fixes about the text a resumed run goes on with."""

    checkpoint: Path
    sha256: str  # of the text it was trained on
    tokenizer: Tokenizer  # the vocabulary its weights were trained with


def training_text(corpus: Corpus | PreparedCorpus, tokenizer_config: TokenizerConfig, config: TrainConfig,
                  group: Group = SINGLE, saved: SavedText | None = None,
                  grown_from: Tokenizer | None = None) -> TrainingText:
    """The run's text laid out for training, whatever the corpus: a text in memory is split, its
    tokenizer learnt (or, resuming, the checkpoint's taken; fine-tuning, `grown_from`'s grown) and
    its ids laid out; a prepared corpus's ids are laid out as they lie in the id cache. Resuming
    (`saved`), the corpus must be the text the checkpoint was trained on."""
    group.rows(config.batch_size)  # refuses a batch that does not split evenly, before any work
    if isinstance(corpus, PreparedCorpus):
        if grown_from is not None:
            raise TextgenError(f"{corpus.files.source} is prepared into the id cache (a folder, a glob, a big file, "
                               "or documents across processes), whose vocabulary cannot grow from a base model; "
                               "fine-tune on one text file instead")
        return _prepared_text(corpus, tokenizer_config, config, group, saved)
    return _text_in_memory(corpus, tokenizer_config, config, group, saved, grown_from)


def recorded_text(record: CorpusRecord, tokenizer_config: TokenizerConfig, why: str) -> Corpus | PreparedCorpus:
    """The text a checkpoint was trained on, found again where its record says (a streamed one
    from the id cache); `why` finishes the error messages."""
    if record.streamed:
        return recorded_prepared(record, tokenizer_config, why)
    return recorded_corpus(record, why)


def _text_in_memory(corpus: Corpus, tokenizer_config: TokenizerConfig, config: TrainConfig, group: Group,
                    saved: SavedText | None, grown_from: Tokenizer | None = None) -> TrainingText:
    if group.active and tokenizer_config.documents != "none":
        raise TextgenError(f"documents={tokenizer_config.documents!r} across processes needs the corpus prepared "
                           "into the id cache (textgen.data.prepare.load_or_prepare with stream=True)")
    _check_same_text(corpus.source, corpus.sha256, saved)
    train_text, val_text = split_text(corpus.text, config.val_fraction, tokenizer_config.documents)
    # A char vocabulary comes from the whole file, so held-out text never holds an unseen character;
    # word and subword vocabularies are learnt from the training part only. Both grow the same way.
    learnt_from = corpus.text if tokenizer_kind(tokenizer_config.kind).learns_from_whole_text else train_text
    if saved is not None:
        tokenizer = saved.tokenizer
    elif grown_from is not None:
        tokenizer = grown_tokenizer(grown_from, tokenizer_config, learnt_from)
    else:
        tokenizer = build_tokenizer(tokenizer_config, learnt_from)
    record = CorpusRecord(
        source=corpus.source, name=corpus.name, path=str(corpus.path) if corpus.path else None,
        sha256=corpus.sha256, encoding=corpus.encoding, characters=len(corpus.text),
        val_fraction=config.val_fraction, train_characters=len(train_text), val_characters=len(val_text),
        documents=tokenizer_config.documents,
    )
    data = lay_out_run_data(train_text, val_text, tokenizer, tokenizer_config.documents, config.batch_size,
                            config.seq_len, config.seed, resolve_device(config.device), group)
    return TrainingText(record, tokenizer, data)


def _prepared_text(prepared: PreparedCorpus, tokenizer_config: TokenizerConfig, config: TrainConfig, group: Group,
                   saved: SavedText | None) -> TrainingText:
    files = prepared.files
    _check_same_text(files.source, prepared.sha256, saved)
    if saved is not None:
        check_same_vocabulary(prepared, saved.tokenizer, saved.checkpoint, "resume again")
    record = CorpusRecord(
        source=files.source, path=str(files.paths[0].resolve()) if files.source_is_file else files.source,
        sha256=prepared.sha256, encoding=files.encoding, characters=prepared.characters,
        val_fraction=config.val_fraction, train_characters=prepared.train_characters,
        val_characters=prepared.val_characters, documents=tokenizer_config.documents, streamed=True,
    )
    data = lay_out_prepared(prepared, config.batch_size, config.seq_len, config.seed, resolve_device(config.device),
                            group)
    how = "reused from the id cache" if prepared.reused else "prepared into the id cache"
    data.notes.insert(0, f"{len(prepared.train_ids) + len(prepared.val_ids):,} token ids {how} ({prepared.folder})")
    return TrainingText(record, prepared.tokenizer, data)


def _check_same_text(source: str, sha256: str, saved: SavedText | None) -> None:
    if saved is not None and sha256 != saved.sha256:
        raise TextgenError(f"{source} is not the text {saved.checkpoint} was trained on; resume needs the same text")
