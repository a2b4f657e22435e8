"""Preparing a big corpus once: its ids, at the narrowest width that fits, in a memory-mapped cache
keyed by the input's contents and the tokenizer, so later runs, `--resume` and `evaluate` start
in a moment and nothing ever holds the text, or a Python list of its ids, whole.

    <cache>/ids/<key>/  meta.json · train.bin · val.bin · {train,val}.segments.npy · the tokenizer's file

The split is the one a small corpus gets (the first floor(n * (1 - f)) characters train, moved on
to the end of a document with --documents). Everything between text and ids is the tokenizer
kind's (textgen/tokenizers): it learns the vocabulary from the pieces it asks for (the whole text
for char, the training part for the others, as for a small corpus), says where a piece may be cut
so that no token straddles the cut, and encodes each piece into an array. This module reads the
blocks, hands them out (to worker processes where the kind gains from them) and writes the files.

Segments are what a model reads from a fresh state: each file of a folder (its own stream), or
each document, stored as  <end> d o c <end> e t c <end>  with one marker between two documents, so
a document's span [start, end) holds both its markers (see data/segments.py).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from textgen import config
from textgen.checkpoint.records import CorpusRecord
from textgen.config import TokenizerConfig, to_dict
from textgen.data.corpus import Corpus, corpus_cache_dir, load_corpus, with_hint
from textgen.data.reading import CorpusFiles, find_files, read_blocks
from textgen.data.pieces import Piece, Split, cut_for, pieces
from textgen.data.split import split_documents
from textgen.errors import TextgenError
from textgen.tokenizers import (
    Tokenizer, TokenNumbering, end_marker, ids_dtype, learn_tokenizer, load_tokenizer, tokenizer_kind,
)
from textgen.tokenizers.parallel import encode_in_parallel, encoding_workers

CACHE_VERSION = 2  # 2: files are separate streams, documents, segments
# Word and subword ids are encoded by worker processes, one per core, above this many bytes of text.
ENCODE_IN_PARALLEL_ABOVE_BYTES = 16 << 20
# Progress reports: (phase, bytes read in this pass, bytes in all).
Progress = Callable[[str, int, int], None]
_CHUNK = 1 << 24  # ids read from a memory map at a time, so that no pass holds a whole part in memory


@dataclass
class PreparedCorpus:
    files: CorpusFiles
    tokenizer: Tokenizer
    train_ids: np.ndarray  # memory-mapped, uint8/16/32
    val_ids: np.ndarray
    train_segments: np.ndarray  # (n, 2) int64 spans [start, end) of the ids, each read from a fresh state
    val_segments: np.ndarray
    val_continues: bool  # the held-out part begins inside a file the training part began
    characters: int
    train_characters: int
    val_characters: int
    sha256: str  # of the text as UTF-8, like a small corpus's Corpus.sha256
    folder: Path
    reused: bool  # True when it came from the cache


def prepare(files: CorpusFiles, tokenizer_config: TokenizerConfig, val_fraction: float, cache_dir: Path,
            progress: Progress | None = None) -> PreparedCorpus:
    """The corpus's ids from the cache, or prepared now and cached (atomically) for next time."""
    settings = json.dumps({"tokenizer": to_dict(tokenizer_config), "val_fraction": val_fraction,
                           "version": CACHE_VERSION}, sort_keys=True)
    key = hashlib.sha256((files.fingerprint() + settings).encode()).hexdigest()[:40]
    folder = Path(cache_dir) / "ids" / key
    if (folder / "meta.json").is_file():
        return _open(folder, files, tokenizer_config, reused=True)
    report = progress or (lambda phase, done, total: None)
    building = folder.with_name(f".{key}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        _build(files, tokenizer_config, val_fraction, building, report)
        try:
            os.replace(building, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # another run that just finished is as good
                raise
    except OSError as error:
        raise TextgenError(f"could not write the id cache in {folder.parent}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return _open(folder, files, tokenizer_config, reused=False)


@dataclass
class HeldOut:
    """The held-out ids a model is scored on: at most MAX_VALIDATION_TOKENS of them."""

    ids: np.ndarray
    segments: np.ndarray  # (n, 2) spans of `ids`, each read from a fresh state
    context_id: int | None  # the last training token, which primes the first segment where it goes on a file
    characters: int  # the characters those ids spell
    note: str  # says when the held-out part was cut short, else ""
    documents: bool  # each segment a document, never cut (else files, cut into rows where they must be)


def held_out(prepared: PreparedCorpus) -> HeldOut:
    ids, segments, characters, note = prepared.val_ids, np.asarray(prepared.val_segments), prepared.val_characters, ""
    if len(ids) > config.MAX_VALIDATION_TOKENS:
        cap = config.MAX_VALIDATION_TOKENS
        if end_marker(prepared.tokenizer) is not None:  # whole documents only
            cap = int(max(segments[0, 1], segments[segments[:, 1] <= cap, 1].max(initial=0)))
        note = f"validating on the first {cap:,} of the {len(ids):,} held-out tokens"
        ids, segments = ids[:cap], segments[segments[:, 0] < cap - 1]
        segments = np.stack([segments[:, 0], np.minimum(segments[:, 1], cap)], axis=1)
        characters = len(prepared.tokenizer.decode(ids.tolist()))
    primed = prepared.val_continues and len(prepared.train_ids)
    context_id = int(prepared.train_ids[-1]) if primed else None
    return HeldOut(np.asarray(ids, dtype=np.int64), segments.reshape(-1, 2), context_id, characters, note,
                   end_marker(prepared.tokenizer) is not None)


def load_or_prepare(source: str | None, encoding: str, tokenizer_config: TokenizerConfig, val_fraction: float,
                    progress: Progress | None = None, stream: bool = False) -> Corpus | PreparedCorpus:
    """The corpus a `train` argument names: a folder, a glob or a file of STREAM_ABOVE_BYTES or more
    (any file, with `stream`) is prepared into the id cache; a smaller file or a named corpus is read
    into memory."""
    files = find_files(source, encoding) if source else None
    if files is None and source:
        try:
            path = Path(source).expanduser()
        except RuntimeError:
            path = Path(source)
        if path.is_file() and (stream or path.stat().st_size >= config.STREAM_ABOVE_BYTES):
            files = CorpusFiles(source, (path,), encoding)
    if files is None:
        return load_corpus(source, encoding=encoding)
    return prepare(files, tokenizer_config, val_fraction, corpus_cache_dir(), progress)


def recorded_prepared(record: CorpusRecord, tokenizer_config: TokenizerConfig, why: str) -> PreparedCorpus:
    """The streamed corpus a checkpoint was trained on, from the id cache (prepared again if the
    cache was cleared), provided its files are still where they were and unchanged; the
    counterpart of data.corpus.recorded_corpus. `why` finishes the error messages."""
    prepared = prepare(recorded_files(record, why), tokenizer_config, record.val_fraction, corpus_cache_dir())
    if prepared.sha256 != record.sha256:
        raise with_hint(f"the training text {record.source} has changed since training", why)
    return prepared


def check_same_vocabulary(prepared: PreparedCorpus, tokenizer: Tokenizer, checkpoint: Path, then: str) -> None:
    """A checkpoint's ids must mean what the cache's ids mean (a cache prepared by other code would not)."""
    def vocabulary(t: Tokenizer) -> list[str]:
        return [t.token_text(i) for i in range(t.vocab_size)]

    if vocabulary(prepared.tokenizer) != vocabulary(tokenizer):
        raise TextgenError(f"the id cache of {prepared.files.source} holds another vocabulary than {checkpoint}; "
                           f"delete {prepared.folder} and {then}")


def recorded_files(record: CorpusRecord, why: str) -> CorpusFiles:
    """The files a streamed corpus was read from, found again where the record says."""
    where = record.path or record.source or ""
    files = find_files(where, record.encoding or "utf-8") if where else None
    if files is None and where and Path(where).is_file():
        files = CorpusFiles(record.source or where, (Path(where),), record.encoding or "utf-8")
    if files is None:
        raise with_hint(f"the training text {where or '(not recorded)'} can no longer be found", why)
    return files


def _build(files: CorpusFiles, config: TokenizerConfig, val_fraction: float, folder: Path, report: Progress) -> None:
    total = files.total_bytes
    kind = tokenizer_kind(config.kind)
    survey = _Survey()
    blocks = survey.read(files, report, total)
    learnt = learn_tokenizer(config, blocks) if kind.learns_from_whole_text else None
    collections.deque(blocks, maxlen=0)  # the rest of the pass: the text's length and hash need it all
    split = Split(math.floor(survey.characters * (1 - Fraction(str(float(val_fraction))))), config.documents)
    if val_fraction == 0:
        split.settled = True
    cut = cut_for(config.kind, config.documents)
    numbering = kind.numbering(config) if config.documents == "none" else None
    if numbering is not None:
        tokenizer, continues = _encode_numbered(files, numbering, split, cut, folder, report, total)
        tokenizer.save(folder)  # its vocabulary is known only once every token has been read
    else:
        train_part = (piece.text for piece in pieces(files, split, cut) if piece.part == "train")  # read lazily
        tokenizer = learnt if learnt is not None else learn_tokenizer(config, train_part)
        tokenizer.save(folder)  # before encoding: the encoding workers read it from there
        parallel = kind.encodes_faster_in_workers and total >= ENCODE_IN_PARALLEL_ABOVE_BYTES
        continues = _encode(files, tokenizer, split, cut, folder, config, report, total, parallel)
    meta = {"version": CACHE_VERSION, "dtype": ids_dtype(tokenizer.vocab_size).name, "characters": survey.characters,
            "train_characters": split.at, "val_characters": survey.characters - split.at,
            "sha256": survey.digest.hexdigest(), "source": files.source, "files": [str(p) for p in files.paths],
            "documents": config.documents, "val_continues": continues}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


class _Survey:
    """The first pass over the text, which counts its characters and hashes it as its blocks go by
    (a char vocabulary is learnt from them on the way)."""

    def __init__(self) -> None:
        self.characters = 0
        self.digest = hashlib.sha256()

    def read(self, files: CorpusFiles, report: Progress, total: int) -> Iterator[str]:
        for _, text, done in read_blocks(files):
            self.digest.update(text.encode("utf-8", "surrogatepass"))
            self.characters += len(text)
            yield text
            report("reading", done, total)


class _PartWriter:
    """One part's ids (train or val), written to disk as they come, and the segments they form:
    one per file, or one per document with the end markers written between documents."""

    def __init__(self, path: Path, dtype: np.dtype, end_id: int | None) -> None:
        self.path, self.dtype, self.end_id = path, dtype, end_id
        self.handle = open(path, "wb")
        self.length = 0
        self.spans: list[np.ndarray] = []
        self.stream_start: int | None = None
        self.continues = False  # the part began inside a file

    def stream(self, ids: np.ndarray, opens_file: bool) -> None:
        if opens_file or self.stream_start is None:
            self.continues = self.continues or (self.length == 0 and not opens_file)
            self._end_stream()
            self.stream_start = self.length
        np.asarray(ids, dtype=self.dtype).tofile(self.handle)
        self.length += len(ids)

    def documents(self, documents: list[np.ndarray]) -> None:
        """Each document followed by the end marker; the part opens with one."""
        if not documents:
            return
        marker = np.array([self.end_id], dtype=self.dtype)
        if self.length == 0:
            marker.tofile(self.handle)
            self.length = 1
        lengths = np.array([len(d) for d in documents], dtype=np.int64)
        opening = self.length - 1 + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])  # each one's first marker
        self.spans.append(np.stack([opening, opening + lengths + 2], axis=1))
        np.concatenate([np.concatenate([d.astype(self.dtype), marker]) for d in documents]).tofile(self.handle)
        self.length += int((lengths + 1).sum())

    def close(self) -> np.ndarray:
        self.handle.close()
        self._end_stream()
        return np.concatenate(self.spans) if self.spans else np.zeros((0, 2), dtype=np.int64)

    def _end_stream(self) -> None:
        if self.stream_start is not None and self.length > self.stream_start:
            self.spans.append(np.array([[self.stream_start, self.length]], dtype=np.int64))
        self.stream_start = None


def _save_segments(folder: Path, writers: dict[str, _PartWriter]) -> bool:
    """Close both parts and write their segments; whether the held-out part began inside a file."""
    for part, writer in writers.items():
        np.save(folder / f"{part}.segments.npy", writer.close(), allow_pickle=False)
    return writers["val"].continues


def _encode_numbered(files: CorpusFiles, numbering: TokenNumbering, split: Split, cut: Callable[[str], int],
                     folder: Path, report: Progress, total: int) -> tuple[Tokenizer, bool]:
    """The text split into tokens once: each token's number in order of first appearance is
    written to disk as it goes, the vocabulary is chosen from the training part's counts, and the
    numbers are then mapped to its ids in one vectorised pass."""
    paths = {part: folder / f"{part}.provisional" for part in ("train", "val")}
    writers = {part: _PartWriter(path, np.dtype(np.uint32), None) for part, path in paths.items()}
    try:
        for piece in pieces(files, split, cut):
            writers[piece.part].stream(numbering.number(piece.text), piece.opens_file)
            report("tokenizing", piece.done, total)
    finally:
        continues = _save_segments(folder, writers)
    train_numbers = _map(paths["train"], np.dtype(np.uint32))
    counts = np.zeros(len(numbering), dtype=np.int64)
    for start in range(0, len(train_numbers), _CHUNK):
        counts += np.bincount(train_numbers[start:start + _CHUNK], minlength=len(numbering))
    del train_numbers
    tokenizer, id_of_number = numbering.vocabulary(counts)
    for part, path in paths.items():
        numbers = _map(path, np.dtype(np.uint32))
        with open(folder / f"{part}.bin", "wb") as out:
            for start in range(0, len(numbers), _CHUNK):
                id_of_number[numbers[start:start + _CHUNK]].tofile(out)
        del numbers
        path.unlink()
    return tokenizer, continues


def _encode(files: CorpusFiles, tokenizer: Tokenizer, split: Split, cut: Callable[[str], int], folder: Path,
            config: TokenizerConfig, report: Progress, total: int, parallel: bool) -> bool:
    end_id = end_marker(tokenizer)
    jobs = ((piece, split_documents(piece.text, config.documents) if end_id is not None else [piece.text])
            for piece in pieces(files, split, cut))
    workers = encoding_workers() if parallel else 1
    encoded: Iterator[tuple[Piece, list[np.ndarray]]] = (
        encode_in_parallel(jobs, folder, config, workers) if workers > 1
        else ((piece, list(map(tokenizer.encode_array, texts))) for piece, texts in jobs))
    writers = {part: _PartWriter(folder / f"{part}.bin", ids_dtype(tokenizer.vocab_size), end_id)
               for part in ("train", "val")}
    try:
        for piece, ids in encoded:
            if end_id is None:
                writers[piece.part].stream(ids[0], piece.opens_file)
            else:
                writers[piece.part].documents(ids)
            report("encoding", piece.done, total)
    finally:
        continues = _save_segments(folder, writers)
    return continues


def _open(folder: Path, files: CorpusFiles, config: TokenizerConfig, reused: bool) -> PreparedCorpus:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        tokenizer = load_tokenizer(folder, config)
        train_ids, val_ids = (_map(folder / f"{part}.bin", dtype) for part in ("train", "val"))
        train_segments, val_segments = (_segments(folder / f"{part}.segments.npy", len(ids))
                                        for part, ids in (("train", train_ids), ("val", val_ids)))
        return PreparedCorpus(files, tokenizer, train_ids, val_ids, train_segments, val_segments,
                              bool(meta["val_continues"]), meta["characters"], meta["train_characters"],
                              meta["val_characters"], meta["sha256"], folder, reused)
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError, TextgenError) as error:
        raise TextgenError(f"the id cache {folder} is damaged ({error}); delete that folder and run again") from None


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


def _segments(path: Path, length: int) -> np.ndarray:
    """A part's segments, checked to be spans of its ids (a damaged cache is refused, not read out of bounds)."""
    spans = np.load(path, mmap_mode="r", allow_pickle=False)  # 16 bytes a document: not read until needed
    if spans.dtype != np.int64 or spans.ndim != 2 or spans.shape[1] != 2 or (
            len(spans) and (spans.min() < 0 or spans.max() > length or (spans[:, 1] < spans[:, 0]).any())):
        raise ValueError(f"{path.name} holds no spans of the ids")
    return spans

