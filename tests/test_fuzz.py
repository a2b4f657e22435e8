"""Property-based tests (hypothesis) of the code that meets untrusted bytes and text.

- Tokenizers give back the text they promise to: a char tokenizer any text made of its
  vocabulary; a word tokenizer any text all of whose tokens it knows; a subword tokenizer, with
  byte fallback, any text at all. Saved and loaded again, they still do.
- The corpus reader turns any bytes, in any encoding a user may name, into text or a
  TextgenError, never another exception.
- A checkpoint with any of its files flipped, truncated or overwritten either loads or is
  refused with a TextgenError by every loader (the model, the trainer state, the metrics).

Examples are derandomized and nothing is stored between runs, so the suite is repeatable and
writes nothing into the repository.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen.config import TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers import (
    UNK, CharTokenizer, SentencePieceTokenizer, StreamDecoder, WordTokenizer, load_tokenizer,
)


def examples(count: int) -> settings:
    return settings(max_examples=count, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def saved_and_loaded(tokenizer, config: TokenizerConfig):
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save(Path(folder))
        return load_tokenizer(Path(folder), config)


# --- char ------------------------------------------------------------------------------------


@examples(150)
@given(st.text(min_size=1), st.data())
def test_char_tokenizer_round_trips_any_text_made_of_its_vocabulary(seen: str, data: st.DataObject) -> None:
    tokenizer = CharTokenizer.from_text(seen)
    text = data.draw(st.text(alphabet=st.sampled_from(sorted(set(seen)))), label="text")
    assert tokenizer.unknown_symbols(text) == []
    assert tokenizer.decode(tokenizer.encode(text)) == text
    reloaded = saved_and_loaded(tokenizer, TokenizerConfig(kind="char"))
    assert reloaded.encode(text) == tokenizer.encode(text)


@examples(100)
@given(st.text(min_size=1), st.text(min_size=1))
def test_char_tokenizer_refuses_text_with_a_character_it_never_saw(seen: str, text: str) -> None:
    tokenizer = CharTokenizer.from_text(seen)
    unseen = tokenizer.unknown_symbols(text)
    if unseen:
        with pytest.raises(TextgenError, match="never saw"):
            tokenizer.encode(text)
    else:
        assert tokenizer.decode(tokenizer.encode(text)) == text


@examples(150)
@given(st.text(min_size=1), st.text())
def test_char_array_encoder_gives_encodes_ids_or_its_refusal(seen: str, text: str) -> None:
    tokenizer = CharTokenizer.from_text(seen)
    try:
        expected = tokenizer.encode(text)
    except TextgenError as refusal:
        with pytest.raises(TextgenError, match=re.escape(str(refusal))):
            tokenizer.encode_array(text)
    else:
        assert tokenizer.encode_array(text).tolist() == expected


@examples(100)
@given(st.lists(st.text(), max_size=6))
def test_char_vocabulary_learnt_from_pieces_is_the_one_learnt_from_them_joined(pieces: list[str]) -> None:
    learnt = CharTokenizer.learn(pieces, TokenizerConfig(kind="char"))
    assert [learnt.token_text(i) for i in range(learnt.vocab_size)] == sorted(set("".join(pieces)))


# --- word ------------------------------------------------------------------------------------


@examples(150)
@given(st.text(), st.booleans())
def test_word_split_always_joins_back_to_the_text(text: str, fold_spaces: bool) -> None:
    assert "".join(WordTokenizer([UNK], fold_spaces).split(text)) == text


@examples(150)
@given(st.text(min_size=1), st.booleans())
def test_word_tokenizer_round_trips_the_text_it_learnt_from(text: str, fold_spaces: bool) -> None:
    tokenizer = WordTokenizer.from_text(text, max_vocab=1_000_000, min_count=1, fold_spaces=fold_spaces)
    assert tokenizer.unknown_symbols(text) == []
    assert tokenizer.decode(tokenizer.encode(text)) == text
    reloaded = saved_and_loaded(tokenizer, TokenizerConfig(kind="word", fold_spaces=fold_spaces))
    assert reloaded.decode(reloaded.encode(text)) == text


@examples(150)
@given(st.text(min_size=1), st.data(), st.booleans())
def test_word_tokenizer_round_trips_any_text_whose_tokens_it_knows(
    seen: str, data: st.DataObject, fold_spaces: bool
) -> None:
    tokenizer = WordTokenizer.from_text(seen, max_vocab=1_000_000, min_count=1, fold_spaces=fold_spaces)
    # Tokens of the vocabulary strung together; neighbours may fuse into a word it does not know.
    pieces = data.draw(st.lists(st.sampled_from(tokenizer.split(seen))), label="pieces")
    for text in ("".join(pieces), data.draw(st.text(), label="any text")):
        ids = tokenizer.encode(text)
        known = not tokenizer.unknown_symbols(text)
        assert (tokenizer.unk_id not in ids) == known, text
        if known:
            assert tokenizer.decode(ids) == text
        assert tokenizer.encode_array(text).tolist() == ids


# --- subword -----------------------------------------------------------------------------------

SUBWORD_TEXT = """\
Snow fell on the valley for three days, and the river froze from the mill to the bridge.
The miller's children skated there each afternoon, racing the dogs along the bank.
Prices: 3 loaves for 1,20 EUR; milk 0,85 EUR. Questions? Ask at the counter (open 8-12).
Ünïcödé and emoji too: café, naïve, 東京, 😀, ñandú.
"""
_subword: dict[str, SentencePieceTokenizer] = {}


def subword(model_type: str) -> SentencePieceTokenizer:
    if model_type not in _subword:
        _subword[model_type] = SentencePieceTokenizer.from_text(SUBWORD_TEXT * 4, vocab_size=400, model_type=model_type)
    return _subword[model_type]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@examples(150)
@given(text=st.text())
def test_subword_tokenizer_round_trips_any_text_and_streams_the_same(model_type: str, text: str) -> None:
    tokenizer = subword(model_type)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    decoder = StreamDecoder(tokenizer)
    assert "".join(map(decoder.feed, ids)) + decoder.flush() == text


@examples(40)
@given(text=st.text())
def test_subword_tokenizer_still_round_trips_once_saved_and_loaded(text: str) -> None:
    reloaded = saved_and_loaded(subword("unigram"), TokenizerConfig(kind="subword"))
    assert reloaded.decode(reloaded.encode(text)) == text


# --- the corpus reader -------------------------------------------------------------------------

# What a user may type after --encoding: text encodings, codecs that are not text encodings,
# codecs that fail without saying where, and names of nothing.
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "ascii", "utf-16", "utf-16-le", "utf-32", "utf-7",
             "idna", "punycode", "unicode_escape", "undefined", "hex", "rot13", "base64", "no-such-codec", ""]
FILE_BYTES = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(max_size=200).map(lambda t: b"\xef\xbb\xbf" + t.encode("utf-8")),
    st.text(max_size=200).map(lambda t: t.encode("utf-16")),
    st.text(max_size=200).map(lambda t: t.encode("utf-16-le")),
    st.text(max_size=200).map(lambda t: t.encode("utf-32")),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@examples(800)
@given(data=FILE_BYTES, encoding=st.sampled_from(ENCODINGS))
def test_the_corpus_reader_turns_any_bytes_into_text_or_a_textgen_error(
    data: bytes, encoding: str, scratch: Path
) -> None:
    from textgen.data.corpus import read_text_file

    path = scratch / "corpus.txt"
    path.write_bytes(data)
    try:
        text = read_text_file(path, encoding)
    except TextgenError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(text, str) and text.strip()
    if encoding == "utf-8":  # the text, strictly decoded, less one leading BOM
        assert text == data.decode("utf-8-sig")


# Text the reader must accept: not blank, no NUL (refused as a sign of binary data), not opening
# with U+FEFF (read as a byte-order mark and dropped).
READABLE_TEXT = st.text(min_size=1).filter(lambda t: t.strip() and "\x00" not in t and not t.startswith("\ufeff"))


@examples(300)
@given(text=READABLE_TEXT, encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                                                      "utf-32", "latin-1", "cp1252"]))
def test_a_text_file_in_the_encoding_given_reads_back_as_its_text(text: str, encoding: str, scratch: Path) -> None:
    from textgen.data.corpus import read_text_file

    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        return  # a character this encoding cannot write: no such file exists
    path = scratch / "written.txt"
    path.write_bytes(data)
    assert read_text_file(path, encoding) == text


# --- damaged checkpoints -------------------------------------------------------------------------

CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.json", "trainer.safetensors", "metrics.jsonl"]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with every file textgen writes, from a real two-step run of the command."""
    import torch

    from textgen.cli import main

    root = tmp_path_factory.mktemp("fuzz-checkpoint")
    (root / "corpus.txt").write_text(SUBWORD_TEXT * 3, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / "cache"))
        with pytest.raises(SystemExit) as exit_:
            main(["train", "corpus.txt", "--out", "ck", "--hidden-size", "16", "--embedding-size", "8", "--layers", "1",
                  "--seq-len", "8", "--batch-size", "2", "--max-steps", "2"])
    torch.set_num_threads(threads)
    assert exit_.value.code in (0, None)
    assert {p.name for p in (root / "ck").iterdir()} == set(CHECKPOINT_FILES)
    return root / "ck"


# A position is drawn near the start half the time, where the headers are (JSON keys, the
# safetensors header length and header), and anywhere the other half.
POSITION = st.one_of(st.integers(0, 600), st.integers(0, 2**31))
DAMAGE = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
        st.tuples(st.just("truncate"), POSITION),
        st.tuples(st.just("overwrite"), POSITION, st.binary(min_size=1, max_size=16)),
    ),
    min_size=1, max_size=3,
)


def damaged(data: bytes, damage: list[tuple]) -> bytes:
    buffer = bytearray(data)
    for kind, position, *rest in damage:
        at = position % (len(buffer) + 1)
        if kind == "truncate":
            del buffer[at:]
        elif kind == "flip" and at < len(buffer):
            buffer[at] ^= 1 << rest[0]
        elif kind == "overwrite":
            buffer[at : at + len(rest[0])] = rest[0]
    return bytes(buffer)


def every_loader() -> list[Callable[[Path], object]]:
    import textgen.checkpoint as checkpoint

    # load_checkpoint is moving from textgen.checkpoint to textgen.api; take it where it is.
    load_checkpoint = getattr(checkpoint, "load_checkpoint", None)
    if load_checkpoint is None:
        from textgen.api import load_checkpoint
    return [load_checkpoint, checkpoint.load_trainer_state, checkpoint.read_metrics]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
@examples(100)
@given(damage=DAMAGE)
def test_a_damaged_checkpoint_file_loads_or_is_refused_with_a_textgen_error(
    name: str, damage: list[tuple], small_checkpoint: Path, scratch: Path
) -> None:
    copy = scratch / f"damaged-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(small_checkpoint, copy)
    (copy / name).write_bytes(damaged((small_checkpoint / name).read_bytes(), damage))
    for load in every_loader():
        try:
            load(copy)
        except TextgenError as error:
            assert "\n" not in str(error), str(error)
