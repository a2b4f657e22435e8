"""Tests for textgen.tokenizers: round trips, vocabularies, files and streaming."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.config import TOKENIZER_KINDS, OptionError, TokenizerConfig
from textgen.errors import TextgenError
from textgen.tokenizers import (
    JSON_FILE,
    KINDS,
    MODEL_FILE,
    CharTokenizer,
    SentencePieceTokenizer,
    StreamDecoder,
    WordTokenizer,
    build_tokenizer,
    learn_tokenizer,
    load_tokenizer,
    tokenizer_kind,
)

ENGLISH = """\
The lighthouse keeper climbed the stairs every evening at dusk.
He counted them, one hundred and twelve, and never lost count.

  When the fog came in, he rang the bell;\tthe ships answered.
"Keep the lamp lit," his mother had said, "and the sea will keep you."
In 1893 the lamp was replaced, but the stairs stayed the same.
"""

CHINESE = """\
清晨的山谷里，雾气还没有散去。
老人背着竹篓，沿着小路慢慢走上山。
他说：「今天的茶叶最好，要趁露水未干时采下。」

孩子们跟在后面，一边唱歌，一边数着台阶！
山顶的风很大，可是茶园里很安静。
"""

MIXED = """\
Tea (茶) reached Europe in the 1600s; 英国人 called it "tea".
今天我们喝 green tea 和 oolong，价格是 3.5 euros。
  Emoji too: 🍵☕ and a café. 完。
"""

ALL_TEXT = ENGLISH + CHINESE + MIXED
texts = pytest.mark.parametrize(
    "text", [ENGLISH, CHINESE, MIXED], ids=["english", "chinese", "mixed"]
)
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
few = settings(max_examples=50, deadline=None)


def word_config(**kw) -> TokenizerConfig:
    return TokenizerConfig(kind="word", **kw)


def folded_word_config(**kw) -> TokenizerConfig:
    return TokenizerConfig(kind="word", fold_spaces=True, **kw)


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def subword(request) -> SentencePieceTokenizer:
    config = TokenizerConfig(kind="subword", vocab_size=500, subword_model=request.param)
    return build_tokenizer(config, ALL_TEXT)


# --- char ---------------------------------------------------------------------------------


def test_char_vocabulary_is_sorted_distinct_code_points():
    tok = build_tokenizer(TokenizerConfig(kind="char"), "banana 🍵 中")
    assert [tok.token_text(i) for i in range(tok.vocab_size)] == [" ", "a", "b", "n", "中", "🍵"]
    assert tok.unk_id is None


@texts
def test_char_round_trip_on_english_chinese_and_emoji(text):
    tok = build_tokenizer(TokenizerConfig(kind="char"), text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


def test_char_encode_names_unseen_characters_visibly():
    tok = build_tokenizer(TokenizerConfig(kind="char"), "abc")
    with pytest.raises(TextgenError) as err:
        tok.encode("ab\né中 é")
    assert str(err.value) == "the model never saw these characters: '\\n', 'é', '中', ' '"
    assert tok.unknown_symbols("ab\né中 é") == ["\n", "é", "中", " "]
    assert tok.unknown_symbols("cab") == []


@few
@given(st.text(st.sampled_from(sorted(set(ALL_TEXT))), max_size=200))
def test_char_round_trip_property(text):
    tok = CharTokenizer.from_text(ALL_TEXT)
    assert tok.decode(tok.encode(text)) == text


# --- word ---------------------------------------------------------------------------------


def test_word_folds_a_single_leading_space_into_the_next_token():
    tok = WordTokenizer.from_text("x", 10, 1, fold_spaces=True)
    assert tok.split("Hello, world!\n") == ["Hello", ",", " world", "!", "\n"]
    assert tok.split("it's 1893 ,ok") == ["it", "'", "s", " 1893", " ,", "ok"]


def test_word_space_run_gives_its_last_space_to_the_word_and_newline_runs_stay_whole():
    tok = WordTokenizer.from_text("x", 10, 1, fold_spaces=True)
    assert tok.split("a   b") == ["a", "  ", " b"]
    assert tok.split("a\n\n  b \n\tc  ") == ["a", "\n\n ", " b", " \n\t", "c", "  "]


def test_word_without_folding_keeps_whitespace_tokens_separate():
    tok = WordTokenizer.from_text("x", 10, 1, fold_spaces=False)
    assert tok.split("Hi,  there\nyou") == ["Hi", ",", "  ", "there", "\n", "you"]


def test_word_without_folding_an_unseen_whitespace_run_is_one_unk():
    tok = WordTokenizer.from_text("a b c d a b", 100, 1)
    ids = tok.encode("a    b")
    assert ids[1] == tok.unk_id and len(ids) == 3
    assert tok.decode(ids) == "a<unk>b"
    assert tok.unknown_symbols("a    b") == ["    "]


def test_word_cjk_ideographs_are_one_token_each_and_cjk_punctuation_separate():
    tok = WordTokenizer.from_text("x", 10, 1, fold_spaces=True)
    assert tok.split("他说：「好茶𠀀」！") == list("他说：「好茶𠀀」！")
    # kana and Latin letters still form runs; digits are a run of their own
    assert tok.split("カタカナ abc123") == ["カタカナ", " abc", "123"]


def test_word_vocabulary_is_most_frequent_first_with_ties_by_token():
    tok = build_tokenizer(folded_word_config(min_count=1), "b a b c a b")
    # " " always follows <unk> so an unknown " word" keeps its space
    vocab = [tok.token_text(i) for i in range(tok.vocab_size)]
    assert vocab == ["<unk>", " ", " a", " b", " c", "b"]


def test_word_vocabulary_honours_max_vocab_and_min_count():
    text = "x x x x y y y z z w"  # " x": 3, " y": 3, " z": 2, "x": 1, " w": 1
    # <unk> " " " x" " y" " z"
    assert build_tokenizer(folded_word_config(min_count=2), text).vocab_size == 5
    assert build_tokenizer(folded_word_config(min_count=3), text).vocab_size == 4
    limited = build_tokenizer(folded_word_config(min_count=1, max_vocab=4), text)
    assert [limited.token_text(i) for i in range(limited.vocab_size)] == ["<unk>", " ", " x", " y"]
    assert limited.unk_id == 0


def test_word_unknown_word_keeps_the_layout_around_unk():
    tok = build_tokenizer(folded_word_config(min_count=1), "the cat sat\non the mat\n")
    ids = tok.encode("the dog sat\non the mat")
    assert ids[1:3] == [tok.encode(" ")[0], tok.unk_id]
    assert tok.decode(ids) == "the <unk> sat\non the mat"
    assert tok.unknown_symbols("the dog sat on a mat, dog") == ["dog", "on", "a", ","]


def test_word_default_gives_whitespace_runs_tokens_of_their_own():
    tok = build_tokenizer(word_config(min_count=1), "the cat  sat\n\non the mat")
    pieces = [tok.token_text(i) for i in tok.encode("the cat  sat\n\non the mat")]
    assert pieces == ["the", " ", "cat", "  ", "sat", "\n\n", "on", " ", "the", " ", "mat"]
    ids = tok.encode("the dog sat")
    assert ids[2] == tok.unk_id and tok.decode(ids) == "the <unk> sat"


def test_word_round_trips_exactly_when_nothing_is_unknown():
    tok = build_tokenizer(word_config(min_count=1), ENGLISH)
    assert tok.unknown_symbols(ENGLISH) == []
    assert tok.decode(tok.encode(ENGLISH)) == ENGLISH


@pytest.mark.parametrize("fold", [True, False])
@few
@given(data=st.data())
def test_word_round_trip_property_on_windows_of_training_tokens(fold, data):
    text = data.draw(st.sampled_from([ENGLISH, CHINESE, MIXED]))
    tok = WordTokenizer.from_text(text, 10_000, 1, fold_spaces=fold)
    tokens = tok.split(text)
    start = data.draw(st.integers(0, len(tokens) - 1))
    window = "".join(tokens[start : start + data.draw(st.integers(0, 40))])
    assert tok.unknown_symbols(window) == []
    assert tok.decode(tok.encode(window)) == window


@few
@given(st.text(st.sampled_from(sorted(set(ALL_TEXT))), max_size=80))
def test_word_property_unknown_tokens_become_unk_and_the_rest_survives(text):
    tok = WordTokenizer.from_text(ALL_TEXT, 10_000, 1, fold_spaces=True)
    vocab = {tok.token_text(i) for i in range(1, tok.vocab_size)}
    expected = "".join(
        t if t in vocab else " <unk>" if t[0] == " " and len(t) > 1 else "<unk>"
        for t in tok.split(text)
    )
    assert "".join(tok.split(text)) == text
    assert tok.decode(tok.encode(text)) == expected
    if not tok.unknown_symbols(text):
        assert expected == text


# --- subword ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [" leading", "   three spaces", "\ttab\tsep", "a\n b\n\n\n  c  ", "\n\nblank first", "end  \n"],
)
def test_subword_keeps_spaces_tabs_and_newlines_exactly(subword, text):
    assert subword.decode(subword.encode(text)) == text


@texts
def test_subword_round_trip_on_training_text(subword, text):
    assert subword.decode(subword.encode(text)) == text


def test_subword_round_trip_on_unseen_emoji_chinese_and_the_space_marker(subword):
    text = "🦜🐉 龍飛鳳舞 ▁x▁ ▁ ñ\x00"
    assert subword.unknown_symbols(text) == []
    assert subword.decode(subword.encode(text)) == text


@few
@given(any_text)
def test_subword_round_trip_property_on_any_text(text):
    tok = _unigram()
    assert tok.decode(tok.encode(text)) == text


def test_subword_too_small_vocab_names_the_smallest_workable_size():
    with pytest.raises(TextgenError, match=r"at least (\d+)") as err:
        SentencePieceTokenizer.from_text(ENGLISH, 100, "unigram")
    smallest = int(err.value.args[0].rsplit(" ", 1)[1])
    assert SentencePieceTokenizer.from_text(ENGLISH, smallest, "unigram").vocab_size == smallest
    with pytest.raises(TextgenError):
        SentencePieceTokenizer.from_text(ENGLISH, smallest - 1, "unigram")


def test_subword_training_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tokenizer(TokenizerConfig(kind="subword", vocab_size=400, subword_model="bpe"), ENGLISH)
    assert list(tmp_path.iterdir()) == []


def test_subword_token_text_shows_byte_pieces_and_unk_id_is_sentencepieces(subword):
    ids = subword.encode("🦜")
    assert [subword.token_text(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    assert subword.unk_id == 0 and subword.token_text(0) == "<unk>"


# --- files --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_save_then_load_gives_identical_ids(kind, tmp_path):
    config = TokenizerConfig(kind=kind, vocab_size=500, min_count=1)
    tok = build_tokenizer(config, ALL_TEXT)
    tok.save(tmp_path)
    written = [p.name for p in tmp_path.iterdir()]
    assert written == [MODEL_FILE if kind == "subword" else JSON_FILE]
    loaded = load_tokenizer(tmp_path, config)
    assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(ALL_TEXT) == tok.encode(ALL_TEXT)
    assert loaded.decode(tok.encode(ALL_TEXT)) == ALL_TEXT


def test_load_restores_word_fold_spaces(tmp_path):
    WordTokenizer.from_text(ENGLISH, 100, 1, fold_spaces=False).save(tmp_path)
    assert json.loads((tmp_path / JSON_FILE).read_text())["fold_spaces"] is False
    assert load_tokenizer(tmp_path, word_config()).split("a b") == ["a", " ", "b"]


@pytest.mark.parametrize(
    "kind, name, content",
    [
        ("char", JSON_FILE, None),
        ("subword", MODEL_FILE, None),
        ("char", JSON_FILE, b"{not json"),
        ("char", JSON_FILE, b""),
        ("word", JSON_FILE, b'{"kind": "char", "tokens": ["a"]}'),
        ("word", JSON_FILE, b'{"kind": "word", "tokens": ["a", "<unk>"]}'),
        ("word", JSON_FILE, b'{"kind": "word", "tokens": ["<unk>", 3]}'),
        ("char", JSON_FILE, b'{"kind": "char", "tokens": ["ab"]}'),
        ("char", JSON_FILE, b'{"kind": "char", "tokens": ["a", "a"]}'),
        ("subword", MODEL_FILE, b"\x00\x01garbage\xff"),
        ("subword", MODEL_FILE, "truncated"),
    ],
)
def test_missing_or_corrupt_tokenizer_file_is_a_one_line_error_naming_it(
    kind, name, content, tmp_path, subword
):
    if content == "truncated":
        subword.save(tmp_path)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(TextgenError) as err:
        load_tokenizer(tmp_path, TokenizerConfig(kind=kind))
    assert str(tmp_path / name) in str(err.value)
    assert "\n" not in str(err.value)


def test_build_rejects_an_unknown_subword_model_and_empty_text():
    with pytest.raises(TextgenError, match="unknown subword model"):
        SentencePieceTokenizer.from_text(ENGLISH, 500, "wordpiece")
    with pytest.raises(TextgenError, match="empty"):
        build_tokenizer(TokenizerConfig(kind="word"), "")
    with pytest.raises(TextgenError, match="nothing but line breaks"):
        build_tokenizer(TokenizerConfig(kind="subword"), "\n\n")


@pytest.mark.parametrize("build, field", [
    (lambda: WordTokenizer.from_text(ENGLISH, max_vocab=1, min_count=1), "max_vocab"),
    (lambda: build_tokenizer(word_config(min_count=1000), ENGLISH), "min_count"),
    (lambda: SentencePieceTokenizer.from_text(ALL_TEXT, 280, "unigram"), "vocab_size"),
])
def test_a_vocabulary_setting_this_text_cannot_meet_is_refused_by_its_field_name(build, field):
    with pytest.raises(OptionError) as err:  # each front end words the field its own way
        build()
    assert err.value.field == field and str(err.value).startswith(field + " ") and "--" not in str(err.value)


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_decode_rejects_ids_outside_the_vocabulary(kind):
    tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=400), ENGLISH)
    for bad in (-1, tok.vocab_size):
        with pytest.raises(TextgenError, match="outside the vocabulary"):
            tok.decode([1, bad])


# --- streaming ----------------------------------------------------------------------------


def _stream(tok, ids) -> list[str]:
    stream = StreamDecoder(tok)
    return [stream.feed(i) for i in ids] + [stream.flush()]


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_stream_decoder_pieces_join_to_decode(kind):
    tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=500, min_count=1), ALL_TEXT)
    ids = tok.encode(MIXED)
    assert "".join(_stream(tok, ids)) == tok.decode(ids) == MIXED


def test_stream_decoder_holds_emoji_bytes_until_the_character_is_complete(subword):
    ids = subword.encode("a🦜b")
    assert len(ids) == 6
    assert _stream(subword, ids) == ["a", "", "", "", "🦜", "b", ""]


def test_stream_decoder_flushes_an_incomplete_byte_sequence_like_decode(subword):
    ids = subword.encode("🦜")[:2]
    assert _stream(subword, ids) == ["", "", "\ufffd"]
    assert subword.decode(ids) == "\ufffd"


@few
@given(st.lists(st.integers(0, 499), max_size=60))
def test_stream_decoder_property_on_random_subword_ids(ids):
    tok = _unigram()
    ids = [i % tok.vocab_size for i in ids]
    assert "".join(_stream(tok, ids)) == tok.decode(ids)


# --- arrays and streamed pieces ---------------------------------------------------------------

ARRAY_CONFIGS = [TokenizerConfig(kind="char"), TokenizerConfig(kind="word", min_count=2),
                 TokenizerConfig(kind="word", min_count=2, fold_spaces=True),
                 TokenizerConfig(kind="subword", vocab_size=500),
                 TokenizerConfig(kind="subword", vocab_size=500, subword_model="bpe")]
array_configs = pytest.mark.parametrize(
    "config", ARRAY_CONFIGS + [replace(c, documents="lines") for c in ARRAY_CONFIGS],
    ids=lambda c: f"{c.kind}-{c.subword_model if c.kind == 'subword' else c.fold_spaces}-{c.documents}")


def cut_into_pieces(text: str, config: TokenizerConfig, size: int) -> list[str]:
    """`text` in pieces of about `size` characters, each cut where the kind's piece_end allows,
    as a big corpus is read."""
    pieces, carry = [], ""
    for start in range(0, len(text), size):
        block = carry + text[start:start + size]
        end = tokenizer_kind(config.kind).piece_end(block)
        pieces.append(block[:end])
        carry = block[end:]
    return [p for p in pieces + [carry] if p]


def test_every_configurable_kind_is_registered():
    assert sorted(KINDS) == sorted(TOKENIZER_KINDS)
    assert all(tokenizer_kind(name).kind == name for name in KINDS)


@array_configs
def test_the_array_encoder_gives_the_ids_encode_gives_at_the_narrowest_width(config):
    # Learnt from English alone, so the word vocabulary leaves some of the mixed text's words unknown.
    tokenizer = build_tokenizer(config, ENGLISH if config.kind == "word" else ALL_TEXT)
    for text in (ALL_TEXT, MIXED, "", "\n"):
        ids = tokenizer.encode_array(text)
        assert ids.dtype == (np.uint8 if tokenizer.vocab_size <= 256 else np.uint16)
        assert ids.tolist() == tokenizer.encode(text)


def test_the_char_array_encoder_refuses_an_unseen_character_as_encode_does():
    tokenizer = build_tokenizer(TokenizerConfig(kind="char"), "abc 中")
    for text in ("ab\né", "ab🍵", "\x00"):  # inside the table of code points, past its end, below its first
        with pytest.raises(TextgenError) as from_list:
            tokenizer.encode(text)
        with pytest.raises(TextgenError) as from_array:
            tokenizer.encode_array(text)
        assert str(from_array.value) == str(from_list.value)


@pytest.mark.parametrize("documents, dtype", [("none", np.uint8), ("lines", np.uint16)])
def test_a_char_vocabulary_of_256_fits_a_byte_and_its_end_marker_does_not(documents, dtype):
    text = "".join(map(chr, range(32, 288)))
    tokenizer = build_tokenizer(TokenizerConfig(kind="char", documents=documents), text)
    assert tokenizer.vocab_size == 256 + (documents != "none")
    ids = tokenizer.encode_array(text[::-1])
    assert ids.dtype == dtype and ids.tolist() == tokenizer.encode(text[::-1]) == list(range(255, -1, -1))


@array_configs
def test_a_vocabulary_learnt_from_streamed_pieces_is_the_one_learnt_from_the_text_whole(config):
    whole = build_tokenizer(config, ALL_TEXT)
    streamed = learn_tokenizer(config, cut_into_pieces(ALL_TEXT, config, 37))
    assert [streamed.token_text(i) for i in range(streamed.vocab_size)] == [
        whole.token_text(i) for i in range(whole.vocab_size)]


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_pieces_cut_where_the_kind_allows_encode_to_the_ids_of_the_whole(kind):
    config = TokenizerConfig(kind=kind, vocab_size=500, min_count=1)
    tokenizer = build_tokenizer(config, ALL_TEXT)
    pieces = cut_into_pieces(ALL_TEXT, config, 23)
    assert len(pieces) > 5 and "".join(pieces) == ALL_TEXT
    assert np.concatenate([tokenizer.encode_array(p) for p in pieces]).tolist() == tokenizer.encode(ALL_TEXT)


def test_words_numbered_as_first_seen_map_to_the_ids_of_the_vocabulary_of_their_counts():
    config = TokenizerConfig(kind="word", min_count=2)
    numbering = tokenizer_kind("word").numbering(config)
    train, held_out = [numbering.number(p) for p in cut_into_pieces(ENGLISH, config, 50)], numbering.number(MIXED)
    counts = np.bincount(np.concatenate(train), minlength=len(numbering))
    tokenizer, id_of_number = numbering.vocabulary(counts)
    expected = build_tokenizer(config, ENGLISH)
    assert [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)] == [
        expected.token_text(i) for i in range(expected.vocab_size)]
    assert id_of_number[np.concatenate(train)].tolist() == expected.encode(ENGLISH)
    assert id_of_number[held_out].tolist() == expected.encode(MIXED)  # its new words are <unk>
    assert tokenizer_kind("word").numbering(replace(config, fold_spaces=True)) is None


# --- speed (printed, not asserted) ----------------------------------------------------------

_cache: dict[str, SentencePieceTokenizer] = {}


def _unigram() -> SentencePieceTokenizer:
    """One small model shared by the hypothesis tests, which cannot take fixtures."""
    if "unigram" not in _cache:
        _cache["unigram"] = SentencePieceTokenizer.from_text(ALL_TEXT, 500, "unigram")
    return _cache["unigram"]


def test_a_subword_vocabulary_learnt_from_a_sample_is_the_same_every_time():
    """A big corpus trains sentencepiece on a sample of its sentences; drawn afresh each time, a
    cleared id cache would give another vocabulary than the checkpoints trained from it."""
    from textgen.tokenizers.subword import SentencePieceTokenizer

    text = "".join(f"line {i} of the keeper's log: the lamp {'burned' if i % 3 else 'failed'}.\n" for i in range(3000))
    vocabularies = {tuple(t.token_text(i) for i in range(t.vocab_size)) for t in (
        SentencePieceTokenizer.from_texts([text], 300, "unigram", sample_sentences=500) for _ in range(2))}
    assert len(vocabularies) == 1


def test_the_sample_of_sentences_is_uniform_and_repeatable():
    from textgen.tokenizers.subword import _sample

    drawn = _sample((str(i) for i in range(100_000)), 2000)
    assert drawn == _sample((str(i) for i in range(100_000)), 2000)
    numbers = [int(x) for x in drawn]
    assert len(set(numbers)) == 2000
    assert abs(sum(numbers) / len(numbers) - 50_000) < 2_500  # about 4 standard errors
    assert sum(n >= 90_000 for n in numbers) == pytest.approx(200, abs=60)  # the tail is drawn too
    assert _sample(iter(["a", "b"]), 5) == ["a", "b"]
