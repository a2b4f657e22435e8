"""Tests for document mode: splitting a file into documents, laying them out in windows that never
carry state from one document into the next, training, scoring and resuming on them."""

from __future__ import annotations

import hashlib
import keyword

import pytest
import torch

from textgen.checkpoint import read_info
from textgen.api import load_checkpoint
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data.corpus import Corpus
from textgen.data import (
    IGNORE, DocumentBatches, document_split_point, lay_out, shuffled, split_documents, split_text,
)
from textgen.errors import TextgenError
from textgen.evaluation import documents_loss, evaluate_text
from textgen.model import reset_rows
from textgen.tokenizers import DocumentTokenizer, StreamDecoder, build_tokenizer, end_marker, load_tokenizer
from textgen.training import StepReport, TrainingCallbacks, resume, train

NAMES = "\n".join(sorted(set(keyword.kwlist) | {
    "ada", "alan", "grace", "linus", "guido", "barbara", "ken", "dennis", "margaret", "edsger",
    "donald", "niklaus", "john", "frances", "radia", "shafi", "leslie", "tim", "vint", "bjarne",
})) + "\n"
TINY = ModelConfig(layers=1, hidden_size=32, embedding_size=16)


def corpus_of(text: str) -> Corpus:
    return Corpus(text, "names.txt", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())


def test_lines_are_documents_and_blank_lines_are_skipped():
    assert split_documents("ada\n\n  \ngrace hopper\r\nlinus\n", "lines") == ["ada", "grace hopper", "linus"]


def test_paragraphs_are_documents_with_their_inner_line_breaks():
    text = "\n\nFirst line\nsecond line\n\n\n  \nAnother\tone\n\nlast"
    assert split_documents(text, "blank-lines") == ["First line\nsecond line", "Another\tone", "last"]


def test_an_unknown_mode_is_refused():
    with pytest.raises(TextgenError, match="^documents must be one of none, lines, blank-lines"):
        split_documents("a", "sentences")


def test_the_validation_split_moves_to_the_next_document_boundary():
    text = "alpha\nbeta\ngamma\ndelta\n"
    assert document_split_point(text, 8, "lines") == 11  # inside "beta": moves past its newline
    assert document_split_point(text, 11, "lines") == 11  # already at a boundary
    assert split_text(text, 0.5, "lines") == ("alpha\nbeta\n", "gamma\ndelta\n")
    assert split_text(text, 0.3, "lines") == ("alpha\nbeta\ngamma\n", "delta\n")  # 16 falls inside "gamma\n"
    assert split_text("one\n\ntwo two\n\nthree", 0.5, "blank-lines") == ("one\n\ntwo two\n\n", "three")


def test_layout_starts_every_document_at_a_window_with_a_fresh_state():
    end = 9
    layout = lay_out([[1, 2], [3, 4, 5, 6], [7]], end, rows=2, window=3)
    # row 0: [E 1 2] then [E 7 .]; row 1: [E 3 4] [5 6 .] -- the long document carries its state on
    assert layout.inputs[:, 0].tolist() == [[end, 1, 2], [end, 7, 0]]
    assert layout.targets[:, 0].tolist() == [[1, 2, end], [7, end, IGNORE]]
    assert layout.inputs[:, 1].tolist() == [[end, 3, 4], [5, 6, 0]]
    assert layout.targets[:, 1].tolist() == [[3, 4, 5], [6, end, IGNORE]]
    assert layout.starts.tolist() == [[True, True], [True, False]]


def test_rows_without_documents_left_are_padded_with_windows_that_score_nothing():
    layout = lay_out([[1, 2, 3, 4, 5, 6]], 9, rows=1, window=2)
    assert layout.windows == 4 and (layout.targets[-1] != IGNORE).sum() == 1
    layout = lay_out([[1, 2, 3, 4], [5]], 9, rows=2, window=2)
    assert layout.targets[2, 1].tolist() == [IGNORE, IGNORE]


def test_each_epoch_has_its_own_order_fixed_by_seed_and_epoch():
    documents = [[i] for i in range(20)]
    assert shuffled(documents, 1, 0) == shuffled(documents, 1, 0)
    assert shuffled(documents, 1, 0) != shuffled(documents, 1, 1)
    assert sorted(shuffled(documents, 1, 3)) == documents
    batches = DocumentBatches(documents, 99, rows=4, seq_len=64, seed=1)
    assert batches.window == 2  # the longest document and its opening marker
    assert batches.steps_in_epoch(0) == 5


def test_reset_rows_zeroes_only_the_rows_that_start_a_document():
    h = torch.ones(2, 3, 4)
    out = reset_rows((h, h * 2), torch.tensor([False, True, False]))
    assert out[0][:, 1].abs().sum() == 0 and out[1][:, 0].eq(2).all() and out[0][:, 2].eq(1).all()


def test_document_tokenizer_adds_an_end_marker_that_decodes_to_nothing(tmp_path):
    config = TokenizerConfig(kind="char", documents="lines")
    tokenizer = build_tokenizer(config, NAMES)
    assert isinstance(tokenizer, DocumentTokenizer) and tokenizer.mode == "lines"
    end = end_marker(tokenizer)
    assert end == tokenizer.vocab_size - 1 == tokenizer.base.vocab_size
    ids = tokenizer.encode("ada")
    assert tokenizer.decode([end, *ids, end]) == "ada" and tokenizer.token_text(end) == "<end>"
    decoder = StreamDecoder(tokenizer)
    assert "".join(decoder.feed(i) for i in [*ids, end]) == "ada"
    tokenizer.save(tmp_path)
    again = load_tokenizer(tmp_path, config)
    assert again.vocab_size == tokenizer.vocab_size and end_marker(again) == end
    assert end_marker(load_tokenizer(tmp_path, TokenizerConfig(kind="char"))) is None


def test_documents_are_scored_independently_of_their_neighbours(make_model):
    model = make_model(vocab_size=12)
    one, two = [1, 2, 3], [4, 5, 6, 7]
    nats_one, count_one = documents_loss(model, [one], 11)
    nats_two, count_two = documents_loss(model, [two], 11)
    nats_both, count_both = documents_loss(model, [one, two], 11, rows=1)
    assert (count_one, count_two, count_both) == (4, 5, 9)  # every token and the closing marker
    assert nats_both == pytest.approx(nats_one + nats_two, rel=1e-5)


class Losses(TrainingCallbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, report: StepReport) -> None:
        self.losses.append(report.train_loss)


def test_training_on_lines_learns_records_the_mode_and_resumes_exactly(tmp_path):
    corpus = corpus_of(NAMES * 4)
    config = TrainConfig(seq_len=32, batch_size=8, learning_rate=1e-2, warmup_steps=5, device="cpu",
                         max_steps=60, eval_every=20)
    tokenizer_config = TokenizerConfig(kind="char", documents="lines")
    whole = Losses()
    result = train(corpus, tmp_path / "whole", TINY, tokenizer_config, config, whole)
    assert result.best.val_loss < whole.losses[0]
    info = read_info(tmp_path / "whole")
    assert info.tokenizer.documents == "lines" and info.corpus.documents == "lines"

    loaded = load_checkpoint(tmp_path / "whole")
    train_text, val_text = split_text(corpus.text, 0.1, "lines")
    figures = evaluate_text(loaded.model, loaded.tokenizer, val_text, train_text)
    assert figures.loss == pytest.approx(info.best.val_loss, rel=1e-6)
    assert figures.characters == len(val_text)

    # more steps than one epoch, so the resumed run must also deal the next epoch's order
    first = train(corpus, tmp_path / "split", TINY, tokenizer_config, TrainConfig(**{**config.__dict__, "max_steps": 60}),
                  _StopAt(23))
    assert first.steps == 23
    rest = Losses()
    resume(tmp_path / "split", corpus, callbacks=rest)
    assert _StopAt.last.losses + rest.losses == whole.losses


class _StopAt(Losses):
    last: "_StopAt"

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        _StopAt.last = self

    def on_step(self, report: StepReport) -> None:
        super().on_step(report)
        if report.step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


# --- sampling whole documents ------------------------------------------------------------------


def _document_model(make_model, favoured: int):
    """A char document model whose next token is almost surely `favoured`, whatever came before."""
    tokenizer = build_tokenizer(TokenizerConfig(kind="char", documents="lines"), NAMES)
    model = make_model(tokenizer.vocab_size)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-30.0)
        model.decoder.bias[favoured] = 30.0
    return model, tokenizer


def test_a_document_sample_ends_at_the_end_marker(make_model):
    from textgen.config import SampleConfig
    from textgen.sampling import prompt_ids, sample_pieces

    tokenizer = build_tokenizer(TokenizerConfig(kind="char", documents="lines"), NAMES)
    model, tokenizer = _document_model(make_model, favoured=tokenizer.end_id)
    assert prompt_ids(tokenizer, "") == [tokenizer.end_id]
    assert prompt_ids(tokenizer, "ad") == [tokenizer.end_id, *tokenizer.encode("ad")]
    pieces = list(sample_pieces(model, tokenizer, "ad", SampleConfig(length=50, num_samples=3, seed=1)))
    texts = ["".join(p.text for p in pieces if p.index == i) for i in range(3)]
    assert texts == ["", "", ""] and sum(p.finished for p in pieces) == 3


def test_a_document_that_never_ends_stops_at_length(make_model):
    from textgen.config import SampleConfig
    from conftest import generate

    base = build_tokenizer(TokenizerConfig(kind="char", documents="lines"), NAMES)
    letter = base.encode("a")[0]
    model, tokenizer = _document_model(make_model, favoured=letter)
    assert "".join(generate(model, tokenizer, "", SampleConfig(length=25, seed=1))) == "a" * 25
