"""Tests for big corpora: reading a folder or a big file a block at a time, the memory-mapped id
cache, and training from it. A prepared corpus must be the same corpus: the same split, the same
vocabulary, the same ids and so the same losses as the text read whole."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import textgen.data.reading as reading
from conftest import PROSE
from textgen import config
from textgen.api import load_checkpoint
from textgen.cli import main
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data import split_text
from textgen.data.corpus import Corpus, _sha256_of_text
from textgen.data.prepare import load_or_prepare, prepare
from textgen.data.reading import CorpusFiles, find_files
from textgen.errors import TextgenError
from textgen.tokenizers import build_tokenizer
from textgen.training import train

# Enough text for a few windows, with characters outside ASCII and a paragraph break at a block edge.
TEXT = (PROSE + "Mixed: café — “quoted” 中文字符。 naïve\n\n") * 6
CONFIGS = [TokenizerConfig(kind="char"), TokenizerConfig(kind="word", min_count=1),
           TokenizerConfig(kind="word", min_count=1, fold_spaces=True), TokenizerConfig(kind="subword", vocab_size=400)]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few dozen bytes, so every test crosses many block edges (and cuts a UTF-8
    sequence in two now and then)."""
    monkeypatch.setattr(reading, "BLOCK_BYTES", 61)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("tokenizer_config", CONFIGS, ids=lambda c: f"{c.kind}{'-folded' if c.fold_spaces else ''}")
def test_prepared_ids_are_the_ids_of_the_text_read_whole(tmp_path, tokenizer_config):
    files = CorpusFiles("text.txt", (write(tmp_path, "text.txt", TEXT),))
    prepared = prepare(files, tokenizer_config, 0.1, tmp_path / "cache")
    train_text, val_text = split_text(TEXT, 0.1)
    whole = build_tokenizer(tokenizer_config, TEXT if tokenizer_config.kind == "char" else train_text)
    vocabulary = [whole.token_text(i) for i in range(whole.vocab_size)]
    assert [prepared.tokenizer.token_text(i) for i in range(prepared.tokenizer.vocab_size)] == vocabulary
    assert prepared.train_ids.tolist() == whole.encode(train_text)
    assert prepared.val_ids.tolist() == whole.encode(val_text)
    assert (prepared.characters, prepared.train_characters) == (len(TEXT), len(train_text))
    assert prepared.sha256 == _sha256_of_text(TEXT)  # as a small corpus records it, so resume compares alike


def test_the_cache_is_reused_and_keyed_by_the_contents_and_the_tokenizer(tmp_path):
    path = write(tmp_path, "text.txt", TEXT)
    files = CorpusFiles("text.txt", (path,))
    first = prepare(files, CONFIGS[0], 0.1, tmp_path / "cache")
    again = prepare(files, CONFIGS[0], 0.1, tmp_path / "cache")
    assert (first.reused, again.reused) == (False, True) and again.folder == first.folder
    assert np.array_equal(again.train_ids, first.train_ids) and isinstance(again.train_ids, np.memmap)
    other_tokenizer = prepare(files, CONFIGS[1], 0.1, tmp_path / "cache")
    path.write_text(TEXT + "more", encoding="utf-8")
    changed = prepare(files, CONFIGS[0], 0.1, tmp_path / "cache")
    assert not changed.reused and len({first.folder, other_tokenizer.folder, changed.folder}) == 3
    assert sorted(p.name for p in (tmp_path / "cache" / "ids").iterdir()) == sorted(
        p.name for p in (first.folder, other_tokenizer.folder, changed.folder))  # no temporary folders left


def test_ids_are_stored_at_the_narrowest_width_that_fits(tmp_path):
    char = prepare(CorpusFiles("a", (write(tmp_path, "a.txt", TEXT),)), CONFIGS[0], 0.1, tmp_path / "cache")
    thousand = " ".join(f"w{i}x" for i in range(1000)) + "\n"
    word = prepare(CorpusFiles("c", (write(tmp_path, "c.txt", thousand * 2),)), CONFIGS[1], 0.1, tmp_path / "cache")
    many = " ".join(f"w{i}x" for i in range(70_000)) + "\n"
    wide = prepare(CorpusFiles("b", (write(tmp_path, "b.txt", many * 2),)),
                   TokenizerConfig(kind="word", min_count=1, max_vocab=100_000), 0.1, tmp_path / "cache")
    assert (char.train_ids.dtype, word.train_ids.dtype, wide.train_ids.dtype) == (np.uint8, np.uint16, np.uint32)
    assert wide.tokenizer.vocab_size > 65_536 and int(wide.train_ids.max()) < wide.tokenizer.vocab_size


def test_a_folder_is_read_recursively_in_name_order_skipping_hidden_and_binary_suffixes(tmp_path):
    write(tmp_path / "lyrics", "b/second.txt", "second\n")
    write(tmp_path / "lyrics", "a.txt", "first\n")
    write(tmp_path / "lyrics", ".hidden/x.txt", "hidden\n")
    (tmp_path / "lyrics" / "cover.png").write_bytes(b"\x89PNG\r\n")
    files = find_files(str(tmp_path / "lyrics"))
    assert [p.relative_to(tmp_path / "lyrics").as_posix() for p in files.paths] == ["a.txt", "b/second.txt"]
    assert [p.name for p in find_files(str(tmp_path / "lyrics" / "**" / "*.txt")).paths] == ["a.txt", "second.txt"]
    assert find_files(str(tmp_path / "lyrics" / "a.txt")) is None  # one file is read as a small corpus
    with pytest.raises(TextgenError, match="no files match"):
        find_files(str(tmp_path / "nothing-*.txt"))


def test_a_bad_byte_in_a_later_file_names_that_file_and_its_offset(tmp_path):
    write(tmp_path / "corpus", "1.txt", TEXT)
    (tmp_path / "corpus" / "2.txt").write_bytes(("x" * 100).encode() + b"\xff" + b"tail")
    with pytest.raises(TextgenError, match=r"2\.txt is not valid UTF-8: bad byte 0xff at byte offset 100;"):
        prepare(find_files(str(tmp_path / "corpus")), CONFIGS[0], 0.1, tmp_path / "cache")
    (tmp_path / "corpus" / "2.txt").write_bytes(b"text\x00more")
    with pytest.raises(TextgenError, match=r"2\.txt looks binary \(NUL byte at offset 4\)"):
        prepare(find_files(str(tmp_path / "corpus")), CONFIGS[0], 0.1, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "ids").iterdir())  # a failed preparation leaves nothing


def test_training_on_a_prepared_corpus_gives_the_losses_of_the_text_read_whole(tmp_path):
    path = write(tmp_path, "text.txt", TEXT)
    model = ModelConfig(layers=1, hidden_size=24, embedding_size=8)
    settings = TrainConfig(seq_len=16, batch_size=4, max_steps=12, eval_every=6, device="cpu", precision="float32")
    whole = train(Corpus(TEXT, "text.txt", None, path, _sha256_of_text(TEXT)), tmp_path / "whole", model,
                  CONFIGS[0], settings)
    prepared = prepare(CorpusFiles("text.txt", (path,)), CONFIGS[0], settings.val_fraction, tmp_path / "cache")
    streamed = train(prepared, tmp_path / "streamed", model, CONFIGS[0], settings)
    assert [row.val_loss for row in streamed.metrics] == pytest.approx([row.val_loss for row in whole.metrics],
                                                                         rel=1e-6)
    info = load_checkpoint(tmp_path / "streamed").info
    assert info.corpus.streamed and info.corpus.val_characters == whole.info.corpus.val_characters


def test_validation_on_a_big_corpus_is_capped_and_the_plan_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_VALIDATION_TOKENS", 50)
    from textgen.training import TrainingCallbacks

    class Plans(TrainingCallbacks):
        notes: list[str] = []

        def on_start(self, plan):
            Plans.notes = plan.notes

    path = write(tmp_path, "text.txt", TEXT)
    prepared = prepare(CorpusFiles("text.txt", (path,)), CONFIGS[0], 0.1, tmp_path / "cache")
    result = train(prepared, tmp_path / "ck", ModelConfig(layers=1, hidden_size=16, embedding_size=8),
                   CONFIGS[0], TrainConfig(seq_len=16, batch_size=4, max_steps=3, device="cpu"), Plans())
    assert f"validating on the first 50 of the {len(prepared.val_ids):,} held-out tokens" in Plans.notes
    assert result.best.val_bits_per_char == pytest.approx(result.best.val_loss * 50 / math.log(2) / 50)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def test_the_cli_trains_on_a_folder_then_resumes_and_evaluates_from_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    write(tmp_path / "songs", "one.txt", TEXT)
    write(tmp_path / "songs", "two/three.txt", TEXT.upper())
    tiny = ["--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4"]
    code, out, err = run(["train", "songs", "--out", "ck", *tiny, "--max-steps", "4"], capsys)
    assert code == 0, err
    assert "prepared into the id cache" in out
    code, out, err = run(["train", "--resume", "ck", "--max-steps", "6"], capsys)
    assert code == 0, err
    assert "reused from the id cache" in out
    code, out, err = run(["evaluate", "ck", "--json"], capsys)
    assert code == 0, err
    figures = json.loads(out)
    best = load_checkpoint(tmp_path / "ck").info.best
    assert figures["loss"] == pytest.approx(best.val_loss, rel=1e-6) and "held-out" in figures["text"]
    code, out, err = run(["sample", "ck", "--length", "40", "--seed", "1"], capsys)
    assert code == 0 and len(out) >= 40, err
    code, out, err = run(["train", "songs", "--out", "docs", *tiny, "--max-steps", "2", "--documents", "lines"], capsys)
    assert code == 2 and "--documents is not supported yet for a folder" in err


def test_a_file_above_the_streaming_size_is_prepared_and_a_smaller_one_read_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, "text.txt", TEXT)
    assert isinstance(load_or_prepare(str(path), "utf-8", CONFIGS[0], 0.1), Corpus)
    monkeypatch.setattr(config, "STREAM_ABOVE_BYTES", 100)
    prepared = load_or_prepare(str(path), "utf-8", CONFIGS[0], 0.1)
    assert not isinstance(prepared, Corpus) and prepared.files.source_is_file
