"""Preparing a big corpus once: its ids, at the narrowest width that fits, in a memory-mapped cache
keyed by the input's contents and the tokenizer, so later runs, `--resume` and `evaluate` start
in a moment and nothing ever holds the text, or a Python list of its ids, whole.

    <cache>/ids/<key>/  meta.json · train.bin · val.bin · the tokenizer's file

The split is the one a small corpus gets (the first floor(n * (1 - f)) characters train); the
vocabulary comes from the whole text (char) or its training part (word, subword), as for a small
corpus, and the text is encoded a block at a time, cut where no token can straddle the cut.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from textgen import config
from textgen.checkpoint.records import CorpusRecord
from textgen.config import TokenizerConfig, to_dict
from textgen.data.corpus import Corpus, corpus_cache_dir, load_corpus
from textgen.data.reading import CorpusFiles, find_files, read_blocks
from textgen.errors import TextgenError
from textgen.tokenizers import CharTokenizer, SentencePieceTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from textgen.tokenizers.word import pattern_for

CACHE_VERSION = 1
# sentencepiece learns from this many sentences drawn from a big corpus, not from all of them.
SUBWORD_SAMPLE_SENTENCES = 500_000
# Progress reports: (phase, bytes read in this pass, bytes in all).
Progress = Callable[[str, int, int], None]


@dataclass
class PreparedCorpus:
    files: CorpusFiles
    tokenizer: Tokenizer
    train_ids: np.ndarray  # memory-mapped, uint8/16/32
    val_ids: np.ndarray
    characters: int
    train_characters: int
    val_characters: int
    sha256: str  # of the text as UTF-8, like a small corpus's Corpus.sha256
    folder: Path
    reused: bool  # True when it came from the cache


def prepare(files: CorpusFiles, tokenizer_config: TokenizerConfig, val_fraction: float, cache_dir: Path,
            progress: Progress | None = None) -> PreparedCorpus:
    """The corpus's ids from the cache, or prepared now and cached (atomically) for next time."""
    if tokenizer_config.documents != "none":
        raise TextgenError("--documents is not supported yet for a folder, a glob or a big file; "
                           "join the documents into one file below the streaming size, or train without it")
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
    context_id: int  # the last training token, which primes the model
    characters: int  # the characters those ids spell
    note: str  # says when the held-out part was cut short, else ""


def held_out(prepared: PreparedCorpus) -> HeldOut:
    ids, characters, note = prepared.val_ids, prepared.val_characters, ""
    if len(ids) > config.MAX_VALIDATION_TOKENS:
        note = f"validating on the first {config.MAX_VALIDATION_TOKENS:,} of the {len(ids):,} held-out tokens"
        ids = ids[: config.MAX_VALIDATION_TOKENS]
        characters = len(prepared.tokenizer.decode(ids.tolist()))
    context_id = int(prepared.train_ids[-1]) if len(prepared.train_ids) else 0
    return HeldOut(np.asarray(ids, dtype=np.int64), context_id, characters, note)


def load_or_prepare(source: str | None, encoding: str, tokenizer_config: TokenizerConfig, val_fraction: float,
                    progress: Progress | None = None) -> Corpus | PreparedCorpus:
    """The corpus a `train` argument names: a folder, a glob or a file of STREAM_ABOVE_BYTES or more is
    prepared into the id cache; a smaller file or a named corpus is read into memory."""
    files = find_files(source, encoding) if source else None
    if files is None and source:
        try:
            path = Path(source).expanduser()
        except RuntimeError:
            path = Path(source)
        if path.is_file() and path.stat().st_size >= config.STREAM_ABOVE_BYTES:
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
        raise TextgenError(f"the training text {record.source} has changed since training; {why}")
    return prepared


def recorded_files(record: CorpusRecord, why: str) -> CorpusFiles:
    """The files a streamed corpus was read from, found again where the record says."""
    where = record.path or record.source or ""
    files = find_files(where, record.encoding or "utf-8") if where else None
    if files is None and where and Path(where).is_file():
        files = CorpusFiles(record.source or where, (Path(where),), record.encoding or "utf-8")
    if files is None:
        raise TextgenError(f"the training text {where or '(not recorded)'} can no longer be found; {why}")
    return files


def _build(files: CorpusFiles, config: TokenizerConfig, val_fraction: float, folder: Path, report: Progress) -> None:
    total = files.total_bytes
    survey = _survey(files, config, report, total)
    split = math.floor(survey.characters * (1 - Fraction(str(float(val_fraction)))))
    if config.kind == "word" and not config.fold_spaces:
        tokenizer = _encode_words_in_one_pass(files, config, split, folder, report, total)
    else:
        if config.kind == "char":
            tokenizer = CharTokenizer(sorted(survey.characters_seen))
        elif config.kind == "word":  # spaces folded into words: count the training part, then encode
            counts: Counter = Counter()
            has_space = False
            for part, text in _pieces(files, split, _word_cut):
                if part == "train":
                    counts.update(pattern_for(True).findall(text))
                    has_space = has_space or " " in text
            tokenizer = WordTokenizer.from_counts(counts, config.max_vocab, config.min_count, True, has_space)
        else:
            train_part = (text for part, text in _pieces(files, split, _line_cut) if part == "train")
            tokenizer = SentencePieceTokenizer.from_texts(train_part, config.vocab_size, config.subword_model,
                                                          SUBWORD_SAMPLE_SENTENCES)
        _encode(files, tokenizer, split, folder, report, total)
    tokenizer.save(folder)
    meta = {"version": CACHE_VERSION, "dtype": _dtype_for(tokenizer.vocab_size).name, "characters": survey.characters,
            "train_characters": split, "val_characters": survey.characters - split, "sha256": survey.sha256,
            "source": files.source, "files": [str(p) for p in files.paths]}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


@dataclass
class _Survey:
    characters: int
    sha256: str
    characters_seen: set[str]


def _survey(files: CorpusFiles, config: TokenizerConfig, report: Progress, total: int) -> _Survey:
    """One pass over the text: its length, its hash, and the characters a char vocabulary needs."""
    digest = hashlib.sha256()
    characters = 0
    seen = np.zeros(0x110000, dtype=bool)
    for _, text, done in read_blocks(files):
        digest.update(text.encode("utf-8", "surrogatepass"))
        characters += len(text)
        if config.kind == "char":
            seen[np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)] = True
        report("reading", done, total)
    return _Survey(characters, digest.hexdigest(), {chr(c) for c in np.flatnonzero(seen)})


def _encode_words_in_one_pass(files: CorpusFiles, config: TokenizerConfig, split: int, folder: Path,
                              report: Progress, total: int) -> Tokenizer:
    """Words, tokenized once: each token gets a provisional id in order of first appearance (written
    to disk as it goes), the vocabulary is chosen from the training part's counts, and the
    provisional ids are then mapped to the vocabulary's in one vectorised pass."""
    pattern = pattern_for(False)
    provisional: dict[str, int] = {}
    paths = {part: folder / f"{part}.provisional" for part in ("train", "val")}
    handles = {part: open(path, "wb") for part, path in paths.items()}
    try:
        for part, text, done in _pieces_with_progress(files, split, _word_cut):
            tokens = pattern.findall(text)
            ids = list(map(provisional.get, tokens))  # after the first blocks nearly every token is known
            if None in ids:
                ids = [provisional.setdefault(token, len(provisional)) for token in tokens]
            np.asarray(ids, dtype=np.uint32).tofile(handles[part])
            report("tokenizing", done, total)
    finally:
        for handle in handles.values():
            handle.close()
    train_provisional = np.memmap(paths["train"], dtype=np.uint32, mode="r") if paths["train"].stat().st_size else \
        np.zeros(0, np.uint32)
    counts = np.zeros(len(provisional), dtype=np.int64)
    for start in range(0, len(train_provisional), 1 << 24):
        counts += np.bincount(train_provisional[start:start + (1 << 24)], minlength=len(provisional))
    tokens = list(provisional)
    tokenizer = WordTokenizer.from_counts({tokens[i]: int(counts[i]) for i in np.flatnonzero(counts)},
                                          config.max_vocab, config.min_count, False, has_space=False)
    final = np.zeros(len(tokens), dtype=np.uint32)  # <unk>, id 0, unless the token is in the vocabulary
    index = tokenizer._index
    for provisional_id, token in enumerate(tokens):
        final[provisional_id] = index.get(token, 0)
    dtype = _dtype_for(tokenizer.vocab_size)
    del train_provisional
    for part, path in paths.items():
        source = np.memmap(path, dtype=np.uint32, mode="r") if path.stat().st_size else np.zeros(0, np.uint32)
        with open(folder / f"{part}.bin", "wb") as out:
            for start in range(0, len(source), 1 << 24):
                final[source[start:start + (1 << 24)]].astype(dtype).tofile(out)
        del source
        path.unlink()
    return tokenizer


def _encode(files: CorpusFiles, tokenizer: Tokenizer, split: int, folder: Path, report: Progress, total: int) -> None:
    dtype = _dtype_for(tokenizer.vocab_size)
    lookup = None
    if isinstance(tokenizer, CharTokenizer):  # one vectorised lookup from code point to id
        codes = np.array([ord(tokenizer.token_text(i)) for i in range(tokenizer.vocab_size)], dtype=np.int64)
        lookup = np.zeros(int(codes.max()) + 1, dtype=dtype)
        lookup[codes] = np.arange(len(codes), dtype=dtype)
    cut = _anywhere if lookup is not None else _word_cut if isinstance(tokenizer, WordTokenizer) else _line_cut
    with open(folder / "train.bin", "wb") as train, open(folder / "val.bin", "wb") as val:
        outputs = {"train": train, "val": val}
        for part, text, done in _pieces_with_progress(files, split, cut):
            if lookup is not None:
                ids = lookup[np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]
            else:
                ids = np.asarray(tokenizer.encode(text), dtype=dtype)
            ids.tofile(outputs[part])
            report("encoding", done, total)


def _open(folder: Path, files: CorpusFiles, config: TokenizerConfig, reused: bool) -> PreparedCorpus:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        tokenizer = load_tokenizer(folder, config)
        train_ids, val_ids = (_map(folder / f"{part}.bin", dtype) for part in ("train", "val"))
        return PreparedCorpus(files, tokenizer, train_ids, val_ids, meta["characters"], meta["train_characters"],
                              meta["val_characters"], meta["sha256"], folder, reused)
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError, TextgenError) as error:
        raise TextgenError(f"the id cache {folder} is damaged ({error}); delete that folder and run again") from None


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# --- the text in pieces that tokenize as the whole does ---------------------------------------------


def _pieces(files: CorpusFiles, split: int, cut: Callable[[str], int]) -> Iterator[tuple[str, str]]:
    for part, text, _ in _pieces_with_progress(files, split, cut):
        yield part, text


def _pieces_with_progress(files: CorpusFiles, split: int,
                          cut: Callable[[str], int]) -> Iterator[tuple[str, str, int]]:
    """("train" or "val", a piece of text, bytes read) with pieces cut only where `cut` allows, and
    the text cut exactly at character `split`, where the training part ends."""
    position = 0  # characters yielded so far
    carry = ""
    done = 0
    for _, text, done in read_blocks(files):
        text = carry + text
        if position < split <= position + len(text):  # the split falls in this block: cut there
            yield "train", text[: split - position], done
            position, text = split, text[split - position :]
            carry = ""
        end = cut(text)
        if end:
            yield ("train" if position < split else "val"), text[:end], done
            position += end
        carry = text[end:]
    if carry:
        yield ("train" if position < split else "val"), carry, done


def _anywhere(text: str) -> int:
    return len(text)


def _line_cut(text: str) -> int:
    """Just after the last line break: sentencepiece encodes line by line."""
    return text.rfind("\n") + 1


def _word_cut(text: str) -> int:
    """Just after a line break followed by something other than whitespace: no word token (a word,
    a number, a mark or a whitespace run) can straddle it."""
    end = len(text)
    while (end := text.rfind("\n", 0, end)) >= 0:
        if end + 1 < len(text) and not text[end + 1].isspace():
            return end + 1
    return 0
