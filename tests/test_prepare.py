"""Tests for big corpora: reading a folder or a big file a block at a time, the memory-mapped id
cache, and training from it. A prepared corpus must be the same corpus: the same split, the same
vocabulary, the same ids and so the same losses as the text read whole."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import textgen.data.reading as reading
from conftest import PROSE
from textgen import config
from textgen.api import load_checkpoint
from textgen.cli import main
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data import split_documents, split_text
from textgen.data.corpus import Corpus, _sha256_of_text
from textgen.data.prepare import held_out, load_or_prepare, prepare
from textgen.evaluation import documents_loss, held_out_loss, segments_loss, total_loss
from textgen.model import RNNLanguageModel
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


@pytest.mark.parametrize("mode", ["lines", "blank-lines"])
@pytest.mark.parametrize("tokenizer_config", [CONFIGS[0], CONFIGS[1], CONFIGS[3]], ids=lambda c: c.kind)
def test_prepared_documents_are_the_documents_of_the_text_read_whole(tmp_path, tokenizer_config, mode):
    tokenizer_config = replace(tokenizer_config, documents=mode)
    files = CorpusFiles("text.txt", (write(tmp_path, "text.txt", TEXT),))
    prepared = prepare(files, tokenizer_config, 0.1, tmp_path / "cache")
    train_text, val_text = split_text(TEXT, 0.1, mode)  # the split moved on to the end of a document
    assert (prepared.train_characters, prepared.val_continues) == (len(train_text), False)
    whole = build_tokenizer(tokenizer_config, TEXT if tokenizer_config.kind == "char" else train_text)
    assert prepared.tokenizer.vocab_size == whole.vocab_size
    end = whole.end_id
    for ids, segments, text in ((prepared.train_ids, prepared.train_segments, train_text),
                                (prepared.val_ids, prepared.val_segments, val_text)):
        expected = [[end, *whole.encode(document), end] for document in split_documents(text, mode)]
        assert [ids[start:stop].tolist() for start, stop in segments] == expected
        assert len(ids) == sum(len(d) for d in expected) - len(expected) + 1  # one marker between two documents


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer_config", [CONFIGS[2], CONFIGS[3], replace(CONFIGS[3], documents="lines")],
                         ids=["word-folded", "subword", "subword-documents"])
def test_worker_processes_encode_the_ids_one_process_does(tmp_path, monkeypatch, tokenizer_config):
    import textgen.data.prepare as preparing

    files = CorpusFiles("text.txt", (write(tmp_path, "text.txt", TEXT),))
    alone = prepare(files, tokenizer_config, 0.1, tmp_path / "alone")
    monkeypatch.setattr(preparing, "ENCODE_IN_PARALLEL_ABOVE_BYTES", 0)
    monkeypatch.setattr(preparing, "encoding_workers", lambda: 2)
    shared = prepare(files, tokenizer_config, 0.1, tmp_path / "shared")
    for part in ("train_ids", "val_ids", "train_segments", "val_segments"):
        assert np.array_equal(getattr(shared, part), getattr(alone, part)), part


def test_prepared_documents_score_as_the_documents_read_whole(tmp_path):
    tokenizer_config = TokenizerConfig(kind="char", documents="lines")
    prepared = prepare(CorpusFiles("t", (write(tmp_path, "t.txt", TEXT),)), tokenizer_config, 0.2, tmp_path / "c")
    _, val_text = split_text(TEXT, 0.2, "lines")
    model = RNNLanguageModel(ModelConfig(vocab_size=prepared.tokenizer.vocab_size, hidden_size=16, embedding_size=8))
    documents = [prepared.tokenizer.encode(d) for d in split_documents(val_text, "lines")]
    nats, count = documents_loss(model, documents, prepared.tokenizer.end_id)
    assert held_out_loss(model, held_out(prepared)) == (pytest.approx(nats, rel=1e-5), count)


def test_each_file_of_a_folder_is_its_own_stream(tmp_path):
    texts = {"a.txt": TEXT, "b/c.txt": TEXT.upper(), "d.txt": TEXT.lower()}
    for name, text in texts.items():
        write(tmp_path / "folder", name, text)
    files = find_files(str(tmp_path / "folder"))
    prepared = prepare(files, CONFIGS[0], 0.1, tmp_path / "cache")
    whole = "".join(texts.values())
    split = math.floor(len(whole) * 0.9)
    a, c = len(TEXT), 2 * len(TEXT)
    assert split > c  # the held-out part is the end of d.txt
    assert prepared.train_segments.tolist() == [[0, a], [a, c], [c, split]]
    assert prepared.val_segments.tolist() == [[0, len(whole) - split]] and prepared.val_continues
    tokenizer = prepared.tokenizer
    assert prepared.train_ids.tolist() == tokenizer.encode(whole[:split])
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, embedding_size=8))
    ids = np.asarray(prepared.train_ids, dtype=np.int64)
    by_file = sum(total_loss(model, torch.from_numpy(ids[start:stop]), rows=1)[0]
                  for start, stop in prepared.train_segments)
    nats, count = segments_loss(model, ids, prepared.train_segments, rows=1)
    assert (nats, count) == (pytest.approx(by_file, rel=1e-5), split - 3)  # a file's first token is not predicted
    part = held_out(prepared)  # goes on d.txt: primed by the last training token, as a small corpus is
    assert held_out_loss(model, part) == pytest.approx(
        total_loss(model, torch.from_numpy(part.ids), int(prepared.train_ids[-1])), rel=1e-6)


def test_no_word_straddles_two_files(tmp_path):
    write(tmp_path / "folder", "a.txt", "the lamp burned low\nand the keeper wo")
    write(tmp_path / "folder", "b.txt", "ke to the gulls\n")
    prepared = prepare(find_files(str(tmp_path / "folder")), CONFIGS[1], 0.0, tmp_path / "cache")
    words = [prepared.tokenizer.token_text(i) for i in prepared.train_ids.tolist()]
    assert "wo" in words and "ke" in words and "woke" not in words
    assert prepared.train_segments.tolist() == [[0, words.index("ke")], [words.index("ke"), len(words)]]


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


@pytest.mark.parametrize("tokenizer_config, key", [
    (CONFIGS[0], "4ee9619c1fcb16e74c4766e8e34bfdcc7fa1be5a"), (CONFIGS[1], "7d94464fd03356c5065fade377a565ab4a8eda0d")])
def test_a_cache_prepared_by_earlier_versions_keeps_its_key_and_is_reused(tmp_path, tokenizer_config, key):
    """The keys are those the code before the tokenizers encoded arrays gave: a cache it prepared
    is found and reused, not prepared again."""
    files = CorpusFiles("text.txt", (write(tmp_path, "text.txt", "the lamp burned low\n" * 20),))
    assert prepare(files, tokenizer_config, 0.1, tmp_path / "cache").folder.name == key


class ByteTokenizer:
    """A kind of tokenizer written in one class, as a new one would be: UTF-8 bytes as tokens."""

    kind = "bytes"
    learns_from_whole_text = False
    encodes_faster_in_workers = False
    vocab_size = 256
    unk_id = None

    @classmethod
    def learn(cls, pieces, config):
        for _ in pieces:  # every byte is in the vocabulary already
            pass
        return cls()

    @classmethod
    def load(cls, directory):
        assert json.loads((directory / "tokenizer.json").read_text()) == {"kind": "bytes"}
        return cls()

    @staticmethod
    def piece_end(text):
        return len(text)

    @classmethod
    def numbering(cls, config):
        return None

    def encode(self, text):
        return list(text.encode())

    def encode_array(self, text):
        return np.frombuffer(text.encode(), dtype=np.uint8)

    def decode(self, ids):
        return bytes(ids).decode(errors="replace")

    def token_bytes(self, token_id):
        return bytes([token_id])

    def token_text(self, token_id):
        return f"<0x{token_id:02X}>"

    def save(self, directory):
        (directory / "tokenizer.json").write_text('{"kind": "bytes"}')


def test_a_new_tokenizer_kind_prepares_a_corpus_once_it_is_registered(tmp_path, monkeypatch):
    import textgen.tokenizers.building as building

    monkeypatch.setattr(config, "TOKENIZER_KINDS", (*config.TOKENIZER_KINDS, "bytes"))
    monkeypatch.setitem(building.KINDS, "bytes", ByteTokenizer)
    write(tmp_path / "folder", "a.txt", TEXT)
    write(tmp_path / "folder", "b.txt", TEXT[::-1])
    prepared = prepare(find_files(str(tmp_path / "folder")), TokenizerConfig(kind="bytes"), 0.1, tmp_path / "cache")
    train_text, val_text = split_text(TEXT + TEXT[::-1], 0.1)
    assert prepared.train_ids.tolist() == list(train_text.encode())
    assert prepared.val_ids.tolist() == list(val_text.encode())
    assert prepared.train_segments.tolist() == [[0, len(TEXT.encode())], [len(TEXT.encode()), len(train_text.encode())]]
    again = prepare(find_files(str(tmp_path / "folder")), TokenizerConfig(kind="bytes"), 0.1, tmp_path / "cache")
    assert again.reused and isinstance(again.tokenizer, ByteTokenizer)


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


TINY = ["--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--seq-len", "16", "--batch-size", "4"]


@pytest.fixture
def songs(tmp_path, monkeypatch) -> Path:
    """A folder of two text files, one in a subfolder, with the cache and the work in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    write(tmp_path / "songs", "one.txt", TEXT)
    write(tmp_path / "songs", "two/three.txt", TEXT.upper())
    return tmp_path / "songs"


def test_the_cli_trains_on_a_folder_then_resumes_and_evaluates_from_the_cache(tmp_path, songs, capsys):
    code, out, err = run(["train", "songs", "--out", "ck", *TINY, "--max-steps", "4"], capsys)
    assert code == 0, err
    assert "prepared into the id cache" in out and "2 training files, each a stream read from a fresh state" in out
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


def test_the_cli_trains_on_a_folder_of_documents_then_evaluates_and_samples_one(tmp_path, songs, capsys):
    code, out, err = run(["train", "songs", "--out", "docs", *TINY, "--max-steps", "3", "--documents", "blank-lines"],
                         capsys)
    assert code == 0, err
    assert "training documents, each read from a fresh state" in out
    code, out, err = run(["evaluate", "docs", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["loss"] == pytest.approx(load_checkpoint(tmp_path / "docs").info.best.val_loss, rel=1e-6)
    code, out, err = run(["sample", "docs", "--length", "40", "--seed", "1"], capsys)
    assert code == 0 and out.strip(), err


def test_a_file_above_the_streaming_size_is_prepared_and_a_smaller_one_read_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, "text.txt", TEXT)
    assert isinstance(load_or_prepare(str(path), "utf-8", CONFIGS[0], 0.1), Corpus)
    monkeypatch.setattr(config, "STREAM_ABOVE_BYTES", 100)
    prepared = load_or_prepare(str(path), "utf-8", CONFIGS[0], 0.1)
    assert not isinstance(prepared, Corpus) and prepared.files.source_is_file


def test_a_cache_whose_vocabulary_is_not_the_checkpoints_is_refused(tmp_path, songs, capsys):
    code, out, err = run(["train", "songs", "--out", "ck", *TINY, "--max-steps", "2"], capsys)
    assert code == 0, err
    (cache,) = (tmp_path / "cache" / "ids").iterdir()
    vocabulary = json.loads((cache / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary["tokens"].reverse()  # as a cache prepared by other code might be
    (cache / "tokenizer.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    for command in (["evaluate", "ck"], ["train", "--resume", "ck", "--max-steps", "4"]):
        code, out, err = run(command, capsys)
        assert code == 2 and "holds another vocabulary than ck" in err and f"delete {cache}" in err, command
