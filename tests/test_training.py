"""Tests for textgen.training: a short run on real prose learns, is reproducible, keeps its best
weights, reports through callbacks, stops where its limits say, and fails cleanly."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import types
from pathlib import Path

import pytest
import torch

import textgen.training.loop
import textgen.training.readings
import textgen.training.run_data
from textgen.checkpoint import read_info, read_metrics
from textgen.api import load_checkpoint
from textgen.cli.app import flag_for
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data.corpus import Corpus
from textgen.data import split_text
from textgen.errors import TextgenError
from textgen.evaluation import evaluate_text
from textgen.training.optimization import learning_rate_at
from textgen.data import batchify
from textgen.training import EvaluationReport, RunPlan, StepReport, TrainingCallbacks, train

TINY = ModelConfig(layers=1, hidden_size=48, embedding_size=16)


def corpus_of(text: str) -> Corpus:
    return Corpus(text, "test-text", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())


def quick(**kw) -> TrainConfig:
    """A run small enough for a test: short windows, few rows, a brisk learning rate, the CPU."""
    settings = {"seq_len": 32, "batch_size": 16, "learning_rate": 1e-2, "warmup_steps": 10, "device": "cpu"}
    return TrainConfig(**{**settings, **kw})


class Recorder(TrainingCallbacks):
    def __init__(self) -> None:
        self.plans: list[RunPlan] = []
        self.steps: list[StepReport] = []
        self.evaluations: list[EvaluationReport] = []
        self.checkpoints: list[Path] = []
        self.stop_requests = 0

    def on_start(self, plan: RunPlan) -> None:
        self.plans.append(plan)

    def on_step(self, report: StepReport) -> None:
        self.steps.append(report)

    def on_evaluation(self, report: EvaluationReport) -> None:
        self.evaluations.append(report)

    def on_checkpoint(self, path: Path) -> None:
        self.checkpoints.append(path)

    def on_stop_requested(self) -> None:
        self.stop_requests += 1


def held_out_loss(out: Path, text: str, val_fraction: float = 0.1):
    """The loaded checkpoint's figures on the held-out part, primed with the training text before it."""
    loaded = load_checkpoint(out)
    train_text, val_text = split_text(text, val_fraction)
    return evaluate_text(loaded.model, loaded.tokenizer, val_text, context=train_text)


def losses(out: Path) -> list[tuple]:
    return [(row.step, row.train_loss, row.val_loss) for row in read_metrics(out)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, docs_text):
    """One 150-step char run on 30 KB of the Python docs, watched by a Recorder."""
    out = tmp_path_factory.mktemp("run") / "ck"
    recorder = Recorder()
    config = quick(max_steps=150)
    result = train(corpus_of(docs_text), out, TINY, TokenizerConfig(kind="char"), config, recorder)
    return types.SimpleNamespace(result=result, out=out, recorder=recorder, config=config, text=docs_text)


# --- a short run learns --------------------------------------------------------------------------


def test_short_run_lowers_validation_loss_well_below_a_uniform_guess(run):
    vocab_size = len(set(run.text))
    val_losses = [row.val_loss for row in read_metrics(run.out)]
    assert len(val_losses) == 5
    assert val_losses[0] < math.log(vocab_size)  # 4.5 nats for ~90 characters
    assert val_losses[-1] < val_losses[0] - 0.3
    assert val_losses[-1] < math.log(vocab_size) - 1.5
    assert run.result.final_train_loss < math.log(vocab_size) - 1.5


def test_run_result_reports_the_run(run):
    result = run.result
    assert (result.steps, result.stop_reason, result.interrupted) == (150, "max-steps", False)
    assert result.checkpoint == run.out
    assert result.best == read_info(run.out).best
    assert result.final_train_loss == run.recorder.steps[-1].train_loss


def test_checkpoint_holds_the_best_by_validation_weights(run):
    info = read_info(run.out)
    rows = read_metrics(run.out)
    best_row = min(rows, key=lambda row: row.val_loss)
    assert info.best.step == best_row.step and info.best.val_loss == best_row.val_loss
    figures = held_out_loss(run.out, run.text)
    assert figures.loss == pytest.approx(info.best.val_loss, rel=1e-6)
    assert figures.bits_per_char == pytest.approx(info.best.val_bits_per_char, rel=1e-6)
    assert info.training.steps == 150
    assert info.corpus.characters == len(run.text)
    assert info.corpus.val_characters == len(split_text(run.text, 0.1)[1])


def test_checkpoint_keeps_the_best_weights_when_validation_gets_worse(tmp_path, docs_text, monkeypatch):
    # From step 40 on a learning rate of 2 wrecks the model, so the evaluations at 60 and 80
    # are worse than the one at 40: the checkpoint must still hold the step-40 weights.
    scheduled = textgen.training.loop.learning_rate_at
    monkeypatch.setattr(textgen.training.loop, "learning_rate_at",
                        lambda config, step, done: scheduled(config, step, done) if step < 40 else 2.0)
    out = tmp_path / "ck"
    train(corpus_of(docs_text), out, TINY, TokenizerConfig(), quick(max_steps=80, eval_every=20))
    rows = read_metrics(out)
    assert [row.step for row in rows] == [20, 40, 60, 80]
    val = {row.step: row.val_loss for row in rows}
    assert val[60] > val[40] and val[80] > val[40]
    info = read_info(out)
    assert info.best.step == 40 and info.training.steps == 80  # records go on after the best
    assert held_out_loss(out, docs_text).loss == pytest.approx(val[40], rel=1e-6)


# --- reproducibility ------------------------------------------------------------------------------


def test_same_seed_gives_identical_losses(tmp_path, docs_text):
    corpus = corpus_of(docs_text[:12_000])
    runs = [
        losses(train(corpus, tmp_path / name, TINY, TokenizerConfig(), quick(max_steps=30, eval_every=10,
                                                                              seed=seed)).checkpoint)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    assert [step for step, *_ in runs[0]] == [10, 20, 30]
    assert runs[0] == runs[1]
    assert runs[2] != runs[0]


# --- callbacks ------------------------------------------------------------------------------------------


def test_on_start_describes_the_run(run):
    [plan] = run.recorder.plans
    train_text, val_text = split_text(run.text, 0.1)
    assert plan.device == "cpu"
    assert plan.vocab_size == len(set(run.text))
    assert (plan.train_tokens, plan.val_tokens) == (len(train_text), len(val_text))
    assert (plan.batch_size, plan.seq_len) == (16, 32)
    row_length = (len(train_text) - 1) // 16
    assert plan.steps_per_epoch == math.ceil(row_length / 32)
    assert (plan.max_steps, plan.epochs, plan.max_time) == (150, None, None)
    assert plan.parameters == load_checkpoint(run.out).model.num_parameters()
    assert plan.notes == []


def test_on_step_reports_every_step_in_order_with_its_schedule(run):
    steps = run.recorder.steps
    plan = run.recorder.plans[0]
    assert [report.step for report in steps] == list(range(1, 151))
    for report in steps:
        assert report.epoch == pytest.approx(report.step / plan.steps_per_epoch)
        assert report.fraction_done == pytest.approx(report.step / 150)
        # the rate used for a step is the schedule's at the step before it was counted
        assert report.learning_rate == pytest.approx(
            learning_rate_at(run.config, report.step - 1, (report.step - 1) / 150))
        assert math.isfinite(report.train_loss) and 0 < report.train_loss < 6
        assert report.grad_norm > 0 and report.tokens_per_second > 0
    assert [r.elapsed for r in steps] == sorted(r.elapsed for r in steps)
    assert steps[9].learning_rate == pytest.approx(1e-2)  # the end of the warm-up
    assert steps[-1].learning_rate < steps[20].learning_rate


def test_on_evaluation_matches_the_metrics_file_and_best_flags(run):
    evaluations = run.recorder.evaluations
    rows = read_metrics(run.out)
    assert [e.step for e in evaluations] == [row.step for row in rows] == [30, 60, 90, 120, 150]
    best = math.inf
    for report, row in zip(evaluations, rows):
        assert report.val_loss == row.val_loss
        assert report.val_perplexity == pytest.approx(math.exp(report.val_loss))
        # a char model scores one token per character: bits per char is nats per token over ln 2
        assert report.val_bits_per_char == pytest.approx(report.val_loss / math.log(2))
        assert report.is_best == (report.val_loss < best)
        best = min(best, report.val_loss)
    assert run.recorder.checkpoints == [run.out] * sum(e.is_best for e in evaluations)


def test_metrics_rows_carry_the_training_figures(run):
    rows = read_metrics(run.out)
    for row in rows:
        assert row.epoch == pytest.approx(row.step / run.recorder.plans[0].steps_per_epoch)
        assert 0 < row.train_loss < 6 and row.tokens_per_second > 0
        assert row.learning_rate == pytest.approx(learning_rate_at(run.config, row.step, row.step / 150))
    assert rows[-1].train_loss < rows[0].train_loss - 0.3


# --- limits ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(docs_text) -> Corpus:
    return corpus_of(docs_text[:6_000])  # 5,400 training characters: 10 windows per row of 16


def test_epochs_limit_stops_after_whole_passes(tmp_path, small_corpus):
    recorder = Recorder()
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(epochs=1.5), recorder)
    steps_per_epoch = recorder.plans[0].steps_per_epoch
    assert steps_per_epoch == math.ceil(((5_400 - 1) // 16) / 32) == 11
    assert (result.stop_reason, result.steps) == ("epochs", math.ceil(1.5 * steps_per_epoch))
    assert recorder.steps[-1].epoch == pytest.approx(result.steps / steps_per_epoch)


def test_the_first_limit_reached_wins(tmp_path, small_corpus):
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=5, epochs=3.0))
    assert (result.stop_reason, result.steps) == ("max-steps", 5)
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=500, epochs=0.5))
    assert (result.stop_reason, result.steps) == ("epochs", 6)


def test_max_time_stops_on_time(tmp_path, small_corpus):
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_time=0.6))
    assert result.stop_reason == "max-time" and result.steps > 0
    assert result.elapsed >= 0.6  # how far past the budget depends on the machine, so only the floor is pinned
    assert load_checkpoint(tmp_path / "ck").info.training.steps == result.steps


def test_with_no_limit_the_default_time_applies_and_is_noted(tmp_path, small_corpus):
    recorder = Recorder()
    config = quick(default_max_time=0.4)
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), config, recorder)
    assert result.stop_reason == "max-time" and result.elapsed >= 0.4
    assert recorder.plans[0].max_time == 0.4
    assert any("no limit given" in note for note in recorder.plans[0].notes)


def test_interrupt_stops_after_the_current_step_and_saves(tmp_path, small_corpus):
    class InterruptAtSeven(Recorder):
        def on_step(self, report: StepReport) -> None:
            super().on_step(report)
            if report.step == 7:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    recorder = InterruptAtSeven()
    handler = signal.getsignal(signal.SIGINT)
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=100), recorder)
    assert (result.stop_reason, result.interrupted, result.steps) == ("interrupted", True, 7)
    assert recorder.stop_requests == 1
    assert read_info(tmp_path / "ck").best.step == 7  # no validation yet: one is made before saving
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back


def test_batch_size_is_lowered_so_every_row_holds_a_window(tmp_path, docs_text):
    recorder = Recorder()
    corpus = corpus_of(docs_text[:2_000])  # 1,800 training characters: 56 rows of 32
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(batch_size=64, max_steps=3), recorder)
    plan = recorder.plans[0]
    assert plan.batch_size == (1_800 - 1) // 32 == 56
    assert plan.notes == ["batch size lowered to 56 so every row holds at least one window"]


def test_val_fraction_zero_still_saves_the_latest_weights(tmp_path, small_corpus):
    recorder = Recorder()
    config = quick(max_steps=20, eval_every=10, val_fraction=0.0)
    result = train(small_corpus, tmp_path / "ck", TINY, TokenizerConfig(), config, recorder)
    assert recorder.evaluations == []  # nothing held out, nothing to report
    assert recorder.checkpoints == [tmp_path / "ck"] * 2
    info = read_info(tmp_path / "ck")
    assert info.best.step == 20 and info.best.val_loss is None
    assert result.best == info.best and info.corpus.val_characters == 0
    assert [row.step for row in read_metrics(tmp_path / "ck")] == [10, 20]
    loaded = load_checkpoint(tmp_path / "ck")
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


def test_word_model_reports_bits_per_character_of_the_held_out_text(tmp_path, docs_text):
    text = docs_text[:20_000]
    result = train(corpus_of(text), tmp_path / "ck", TINY, TokenizerConfig(kind="word", min_count=2),
                   quick(max_steps=30, eval_every=30))
    val_text = split_text(text, 0.1)[1]
    figures = held_out_loss(tmp_path / "ck", text)
    assert figures.characters == len(val_text) and figures.tokens < len(val_text) / 2
    assert figures.loss == pytest.approx(result.best.val_loss, rel=1e-6)
    assert result.best.val_bits_per_char == pytest.approx(
        result.best.val_loss * figures.tokens / math.log(2) / len(val_text), rel=1e-9)


# --- failures ----------------------------------------------------------------------------------------------


def test_text_shorter_than_one_window_is_refused(tmp_path):
    text = "The lamp was lit at dusk, every evening, for thirty years."
    with pytest.raises(TextgenError) as err:
        train(corpus_of(text), tmp_path / "ck", TINY, TokenizerConfig(), quick(seq_len=64, max_steps=5))
    message = str(err.value)
    assert "shorter than one training window (seq_len 64)" in message and message.endswith("a smaller seq_len")
    assert err.value.worded(flag_for).endswith("(--seq-len 64); use a longer text or a smaller --seq-len")
    assert "\n" not in message and not (tmp_path / "ck").exists()


def nan_after(calls: int) -> types.SimpleNamespace:
    """torch.nn.functional as textgen.training.loop sees it, but cross_entropy turns NaN after `calls` calls."""
    functional = torch.nn.functional
    count = 0

    def cross_entropy(*args, **kwargs):
        nonlocal count
        count += 1
        loss = functional.cross_entropy(*args, **kwargs)
        return loss * float("nan") if count > calls else loss

    return types.SimpleNamespace(cross_entropy=cross_entropy)


def test_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(textgen.training.loop, "F", nan_after(25))  # steps 0..24 are fine, step 25 is NaN
    out = tmp_path / "ck"
    with pytest.raises(TextgenError) as err:
        train(small_corpus, out, TINY, TokenizerConfig(), quick(max_steps=100, eval_every=10))
    message = str(err.value)
    assert "diverged at step 25" in message and "nan" in message and str(out) in message
    assert "\n" not in message
    info = read_info(out)
    assert info.best.step == 20 and [row.step for row in read_metrics(out)] == [10, 20]
    loaded = load_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    assert held_out_loss(out, small_corpus.text).loss == pytest.approx(info.best.val_loss, rel=1e-6)


def test_nan_loss_before_any_checkpoint_does_not_claim_one(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(textgen.training.loop, "F", nan_after(3))
    out = tmp_path / "ck"
    with pytest.raises(TextgenError) as err:
        train(small_corpus, out, TINY, TokenizerConfig(), quick(max_steps=100, eval_every=10))
    assert not out.exists()
    assert "diverged at step 3" in str(err.value) and "kept in" not in str(err.value)


# --- the pieces of the loop --------------------------------------------------------------------------------


def test_batchify_lays_the_stream_out_as_in_its_diagram():
    stream = torch.tensor([ord(c) for c in "abcdefghijklm"])
    inputs, targets = batchify(stream, rows=3)

    def letters(t: torch.Tensor) -> list[str]:
        return ["".join(map(chr, row.tolist())) for row in t]

    assert letters(inputs) == ["abcd", "efgh", "ijkl"]
    assert letters(targets) == ["bcde", "fghi", "jklm"]


def test_batchify_drops_the_tail_that_does_not_fill_every_row():
    inputs, targets = batchify(torch.arange(16), rows=3)  # 15 predictions: 5 per row
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert torch.equal(targets, inputs + 1)
    inputs, targets = batchify(torch.arange(14), rows=3)  # 13 predictions: 4 per row, 1 dropped
    assert inputs.shape == (3, 4) and targets[-1].tolist() == [9, 10, 11, 12]
    inputs, targets = batchify(torch.arange(10), rows=1)
    assert inputs.tolist() == [list(range(9))] and targets.tolist() == [list(range(1, 10))]


def test_a_nan_first_validation_leaves_an_earlier_checkpoint_untouched(tmp_path, small_corpus, monkeypatch):
    out = tmp_path / "ck"
    train(small_corpus, out, TINY, TokenizerConfig(), quick(max_steps=4))
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    monkeypatch.setattr(textgen.training.run_data, "total_loss", lambda *args, **kwargs: (float("nan"), 10))
    train(small_corpus, out, TINY, TokenizerConfig(kind="word", min_count=1), quick(max_steps=4))
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_figures_read_from_the_device_every_few_steps_are_those_read_every_step(tmp_path, small_corpus, monkeypatch):
    """On a GPU the losses are read back every 16 steps, not every step; the figures, the metrics
    and the weights must be exactly those of reading every step (what a CPU does)."""
    runs = {}
    for every in (1, 4):
        monkeypatch.setitem(textgen.training.readings.READ_EVERY, "cpu", every)
        recorder = Recorder()
        result = train(small_corpus, tmp_path / f"every-{every}", TINY, TokenizerConfig(),
                       quick(max_steps=23, eval_every=10), recorder)
        runs[every] = (recorder.steps, result)
    (steps, result), (batched, batched_result) = runs[1], runs[4]
    assert [s.step for s in batched] == list(range(1, 24))  # every step reported, in order, none twice
    for one, other in zip(steps, batched, strict=True):
        assert (one.step, one.train_loss, one.grad_norm, one.learning_rate, one.fraction_done) == (
            other.step, other.train_loss, other.grad_norm, other.learning_rate, other.fraction_done)
    assert [(m.step, m.train_loss, m.val_loss) for m in result.metrics] == [
        (m.step, m.train_loss, m.val_loss) for m in batched_result.metrics]


def test_a_diverged_loss_read_a_few_steps_late_still_stops_with_the_last_good_checkpoint(tmp_path, small_corpus,
                                                                                        monkeypatch):
    monkeypatch.setitem(textgen.training.readings.READ_EVERY, "cpu", 4)
    monkeypatch.setattr(textgen.training.loop, "F", nan_after(25))
    out = tmp_path / "ck"
    with pytest.raises(TextgenError, match="diverged at step 25"):
        train(small_corpus, out, TINY, TokenizerConfig(), quick(max_steps=100, eval_every=10))
    assert read_info(out).best.step == 20
    assert all(torch.isfinite(p).all() for p in load_checkpoint(out).model.parameters())
