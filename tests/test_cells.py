"""Tests for the cell registry (textgen.model.cells): every kind it holds, read from the registry
rather than from a list here, trains, resumes exactly, samples with a fast step that gives the
logits of model.forward, and shows in every insight view; a name it does not hold is refused."""

from __future__ import annotations

import hashlib
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import textgen
from conftest import generate, run_fast_step
from textgen.checkpoint import load_trainer_state
from textgen.config import CELLS, ModelConfig, OptionError, SampleConfig, TokenizerConfig, TrainConfig
from textgen.data.corpus import Corpus
from textgen.evaluation import evaluate_text, total_loss
from textgen.insight import cell_report, compare, gradient_fade, memory_reach, surprisal
from textgen.model import (
    CELL_KINDS, CellKind, FastStep, ModuleStep, RNNLanguageModel, cell_kind, make_step, state_parts,
)
from textgen.tokenizers import CharTokenizer
from textgen.training import StepReport, TrainingCallbacks, resume, train

kinds = pytest.mark.parametrize("kind", CELL_KINDS.values(), ids=CELL_KINDS.keys())


# --- the registry -------------------------------------------------------------------------------


def test_the_registry_holds_exactly_the_cells_the_config_accepts():
    assert set(CELL_KINDS) == set(CELLS)
    for name, kind in CELL_KINDS.items():
        assert kind.name == name and cell_kind(name) is kind
        assert kind.state_parts[0] == "h"  # what every layer hands up and the output layer reads


@pytest.mark.parametrize("name", ["lstm2", "LSTM", "", "transformer"])
def test_an_unknown_cell_is_refused_with_a_message_naming_the_field(name):
    with pytest.raises(OptionError) as raised:
        cell_kind(name)
    assert raised.value.field == "cell"
    assert str(raised.value) == f"cell must be one of {', '.join(CELL_KINDS)}, not {name!r}"
    with pytest.raises(OptionError, match=r"^cell must be one of") as raised:
        ModelConfig(vocab_size=10, cell=name)
    assert raised.value.field == "cell"


def test_a_model_whose_config_was_changed_after_its_check_is_refused_too():
    config = ModelConfig(vocab_size=10)
    config.cell = "lstm-with-peepholes"  # a dataclass stays mutable: the registry is the last word
    with pytest.raises(OptionError) as raised:
        RNNLanguageModel(config)
    assert raised.value.field == "cell"


# --- the model and its fast step ----------------------------------------------------------------


@kinds
@pytest.mark.parametrize("skip_connections", [True, False])
def test_the_state_holds_the_parts_the_kind_names(make_model, kind, skip_connections):
    model = make_model(30, cell=kind.name, layers=2, hidden_size=12, skip_connections=skip_connections)
    assert model.cell_kind is kind
    ids = torch.randint(0, 30, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, state = model(ids)
    assert [p.shape for p in state_parts(state)] == [(2, 3, 12)] * len(kind.state_parts)
    assert [p.shape for p in state_parts(model.init_state(3))] == [(2, 3, 12)] * len(kind.state_parts)


@kinds
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("skip_connections", [True, False])
def test_the_fast_step_of_every_kind_gives_the_logits_of_forward(make_model, kind, layers, skip_connections):
    model = make_model(40, cell=kind.name, layers=layers, hidden_size=20, embedding_size=12, seed=layers,
                       skip_connections=skip_connections)
    ids = torch.randint(0, 40, (3, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, _ = model(ids)
    for step in (FastStep(model), FastStep(model, differentiable=True)):
        torch.testing.assert_close(run_fast_step(model, ids, step), expected, rtol=1e-5, atol=1e-5)
    assert make_step(model).kind == "fast"


@kinds
@pytest.mark.parametrize("ngram_order", [0, 3])
def test_advancing_a_step_gives_the_state_the_whole_step_gives(make_model, kind, ngram_order):
    """Reading a prompt skips the prediction (output layer, counts) but must leave exactly the
    state the whole step leaves: a cached state is then the state a cold read computes."""
    from textgen.model.ngram import NGramCounts

    model = make_model(30, cell=kind.name, layers=2, hidden_size=12, embedding_size=6, seed=2, ngram_order=ngram_order)
    ids = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(5))
    if ngram_order:
        model.attach_counts(NGramCounts.count(ids.flatten(), 30, ngram_order))
    for step in (FastStep(model), ModuleStep(model)):
        whole = advanced = step.from_model_state(model.init_state(1), 3)
        for column in ids.t():
            _, whole = step(column, whole)
            advanced = step.advance(column, advanced)
        flat = (lambda state: [part for layer in state for part in layer]) if step.kind == "fast" else state_parts
        assert len(flat(whole)) == len(flat(advanced)) > 0
        assert all(torch.equal(a, b) for a, b in zip(flat(whole), flat(advanced)))


def test_a_kind_registered_under_a_new_name_works_everywhere_a_cell_is_read(monkeypatch, make_model, prose):
    """Nothing outside the registry compares cell names: an LSTM under another name keeps its
    forget-gate bias, its (h, c) state, its fast step and its gates for insight."""
    from textgen.model.cells.lstm import LSTM

    class RenamedLSTM(LSTM):
        name = "lstm-renamed"

    kind = RenamedLSTM()
    monkeypatch.setitem(CELL_KINDS, kind.name, kind)
    monkeypatch.setattr("textgen.config.CELLS", (*CELLS, kind.name))
    tokenizer = CharTokenizer.from_text(prose)
    model = make_model(tokenizer.vocab_size, cell=kind.name, layers=2, hidden_size=8, embedding_size=6)
    assert model.cell_kind is kind
    assert all(weights["bias_ih"][8:16].tolist() == [1.0] * 8 for weights in model.layer_weights())
    ids = torch.tensor([tokenizer.encode(prose[:40])])
    with torch.no_grad():
        expected, state = model(ids)
    assert len(state_parts(state)) == 2
    torch.testing.assert_close(run_fast_step(model, ids), expected, rtol=1e-5, atol=1e-5)
    assert make_step(model).kind == "fast"
    report = cell_report(model, tokenizer, tokenizer.encode(prose[:200]), prose[:200])
    assert list(report.saturation) == [f"layer {layer} {gate} gate" for layer in (1, 2)
                                       for gate in ("input", "forget", "output")]


# --- training, resume, sampling and insight, for every kind -------------------------------------


class LossRecorder(TrainingCallbacks):
    """Keeps every step's loss; sends itself SIGINT (what Ctrl-C sends) after step `stop_at`."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.losses: list[float] = []
        self.stop_at = stop_at

    def on_step(self, report: StepReport) -> None:
        self.losses.append(report.train_loss)
        if report.step == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)


@dataclass
class Runs:
    """One kind trained twice the same way: once straight through, once stopped and resumed."""

    kind: CellKind
    text: str  # the first characters of what they were trained on
    whole: Path
    split: Path
    whole_losses: list[float]
    before_stop: list[float]
    after_resume: list[float]


STEPS, STOP_AT = 16, 7


@pytest.fixture(scope="module", params=CELL_KINDS.values(), ids=CELL_KINDS.keys())
def runs(request, tmp_path_factory, docs_text) -> Runs:
    kind, folder = request.param, tmp_path_factory.mktemp(request.param.name)
    text = docs_text[:12_000]
    corpus = Corpus(text, "test-text", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())
    # Dropout draws random masks, so the resume must bring back the random state as well as the weights.
    model = ModelConfig(cell=kind.name, layers=2, hidden_size=24, embedding_size=8, dropout=0.1)
    config = TrainConfig(seq_len=16, batch_size=8, learning_rate=1e-2, warmup_steps=3, device="cpu",
                         max_steps=STEPS, eval_every=6)
    whole, first, second = LossRecorder(), LossRecorder(stop_at=STOP_AT), LossRecorder()
    train(corpus, folder / "whole", model, TokenizerConfig(), config, whole)
    stopped = train(corpus, folder / "split", model, TokenizerConfig(), config, first)
    assert (stopped.stop_reason, stopped.steps) == ("interrupted", STOP_AT)
    assert resume(folder / "split", corpus, callbacks=second).steps == STEPS
    return Runs(kind, text[:300], folder / "whole", folder / "split", whole.losses, first.losses, second.losses)


def test_every_kind_trains_and_its_loss_falls(runs):
    assert len(runs.whole_losses) == STEPS and all(math.isfinite(loss) for loss in runs.whole_losses)
    assert sum(runs.whole_losses[-4:]) / 4 < runs.whole_losses[0]
    assert textgen.load(runs.whole, device="cpu").model.config.cell == runs.kind.name


def test_every_kind_resumes_with_identical_losses_and_weights(runs):
    assert len(runs.before_stop) == STOP_AT
    assert runs.before_stop + runs.after_resume == runs.whole_losses  # exactly, step for step
    whole, split = (textgen.load(folder, device="cpu").model.state_dict() for folder in (runs.whole, runs.split))
    for name, value in whole.items():
        assert torch.equal(value, split[name]), name
    # the carried state is saved part by part, as many parts as the kind names
    saved = load_trainer_state(runs.whole).tensors
    assert sorted(key for key in saved if key.startswith("state.")) == \
        [f"state.{index}" for index in range(len(runs.kind.state_parts))]


def test_every_kind_samples_through_a_fast_step_that_is_its_forward(runs):
    loaded = textgen.load(runs.whole, device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert loaded.step.kind == "fast"
    ids = torch.tensor([tokenizer.encode(runs.text[:60])])
    with torch.no_grad():
        expected, _ = model(ids)
    torch.testing.assert_close(run_fast_step(model, ids, loaded.step), expected, rtol=1e-5, atol=1e-5)
    config = SampleConfig(seed=5, length=80, temperature=1.0, top_k=0)
    fast = "".join(generate(model, tokenizer, "The ", config, loaded.step))
    assert len(fast) == 80
    assert fast == "".join(generate(model, tokenizer, "The ", config, ModuleStep(model)))


def test_every_kind_shows_in_every_insight_view(runs):
    loaded = textgen.load(runs.whole, device="cpu")
    model, tokenizer, kind, text = loaded.model, loaded.tokenizer, runs.kind, runs.text
    ids = tokenizer.encode(text)
    nats, _ = total_loss(model, torch.tensor(ids), rows=1)

    memory = memory_reach(model, ids, characters=len(text) - 1, longest=16)
    assert [point.reset_every for point in memory] == [1, 2, 4, 8, 16, None]
    assert memory[-1].nats_per_token == pytest.approx(nats / (len(ids) - 1), rel=1e-5)

    fades = gradient_fade(model, ids, distance=8, positions=2)
    assert [fade.layer for fade in fades] == [0, 1] and all(len(fade.norms) == 9 for fade in fades)
    assert all(math.isfinite(norm) and norm >= 0 for fade in fades for norm in fade.norms)
    assert all(fade.norms[0] > 0 for fade in fades)

    report = cell_report(model, tokenizer, ids, text)
    assert report.tokens == list(text) and report.best
    assert list(report.saturation) == [f"layer {layer} {gate}" for layer in (1, 2) for gate in kind.sigmoid_gates]

    surprise = surprisal(model, tokenizer, ids, top=2)
    assert "".join(token.text for token in surprise) == text[1:]
    assert sum(token.bits for token in surprise) == pytest.approx(nats / math.log(2), rel=1e-5)

    (row,) = compare([(kind.name, loaded)], text)
    assert (row.name, row.cell) == (kind.name, kind.name)
    assert row.bits_per_char == pytest.approx(evaluate_text(model, tokenizer, text).bits_per_char)
