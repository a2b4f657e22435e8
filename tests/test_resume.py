"""Tests for training that never loses work: exact resume, Ctrl-C and SIGTERM, early stopping,
weight averaging, precision, presets, and saves that fail halfway."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import textgen.checkpoint.format
import textgen.training.loop
import textgen.training.run_data
from textgen.checkpoint import TRAINER_FILE, load_trainer_state, read_info, read_metrics
from textgen.api import load_checkpoint
from textgen.config import (
    ModelConfig, TokenizerConfig, TrainConfig,
)
from textgen.data.corpus import Corpus
from textgen.devices import UNSUPPORTED, bfloat16_support
from textgen.errors import TextgenError
from textgen.training import StepReport, TrainingCallbacks, resume, train

# Dropout and a weight average on purpose: both draw on or carry state that a resume must restore.
TINY = ModelConfig(layers=2, hidden_size=32, embedding_size=16, dropout=0.1)


def corpus_of(text: str) -> Corpus:
    return Corpus(text, "test-text", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())


def quick(**kw) -> TrainConfig:
    settings = {"seq_len": 16, "batch_size": 8, "learning_rate": 1e-2, "warmup_steps": 5, "device": "cpu",
                "ema_decay": 0.9}
    return TrainConfig(**{**settings, **kw})


class LossRecorder(TrainingCallbacks):
    """Keeps every step's loss; sends itself SIGINT (what Ctrl-C sends) after step `stop_at`."""

    def __init__(self, stop_at: int | None = None, signum: int = signal.SIGINT) -> None:
        self.losses: list[float] = []
        self.stop_at, self.signum = stop_at, signum
        self.checkpoints: list[Path] = []

    def on_step(self, report: StepReport) -> None:
        self.losses.append(report.train_loss)
        if report.step == self.stop_at:
            os.kill(os.getpid(), self.signum)

    def on_checkpoint(self, path: Path) -> None:
        self.checkpoints.append(path)


@pytest.fixture
def corpus(docs_text: str) -> Corpus:
    return corpus_of(docs_text[:12_000])


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in load_checkpoint(directory).model.named_parameters()}


# --- resume -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_resume_continues_with_identical_losses(tmp_path, corpus, signum):
    config = quick(max_steps=40, eval_every=15)
    whole = LossRecorder()
    train(corpus, tmp_path / "whole", TINY, TokenizerConfig(), config, whole)

    first = LossRecorder(stop_at=22, signum=signum)
    stopped = train(corpus, tmp_path / "split", TINY, TokenizerConfig(), config, first)
    assert (stopped.stop_reason, stopped.steps) == ("interrupted", 22)
    second = LossRecorder()
    finished = resume(tmp_path / "split", corpus, callbacks=second)

    assert (finished.stop_reason, finished.steps) == ("max-steps", 40)
    assert len(first.losses) == 22 and len(second.losses) == 18
    assert first.losses + second.losses == whole.losses  # exactly, step for step
    whole_best = dataclasses.replace(read_info(tmp_path / "whole").best, elapsed=finished.best.elapsed)
    assert finished.best.to_json() == pytest.approx(whole_best.to_json())
    for name, value in weights(tmp_path / "whole").items():
        assert torch.equal(value, weights(tmp_path / "split")[name]), name
    whole_rows = [(r.step, r.val_loss) for r in read_metrics(tmp_path / "whole")]
    split_rows = [(r.step, r.val_loss) for r in read_metrics(tmp_path / "split")]
    assert split_rows == whole_rows  # the interruption made no validation of its own: one had been made


def test_interrupted_before_any_validation_saves_a_validated_resumable_checkpoint(tmp_path, corpus):
    recorder = LossRecorder(stop_at=3)
    result = train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=50), recorder)
    assert (result.stop_reason, result.steps) == ("interrupted", 3)
    info = read_info(tmp_path / "ck")
    assert info.best.step == 3 and info.training.steps == 3
    saved = load_trainer_state(tmp_path / "ck")
    assert saved.record["progress"]["step"] == 3
    assert resume(tmp_path / "ck", corpus).steps == 50


def test_resume_with_a_larger_limit_extends_a_finished_run(tmp_path, corpus):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=12))
    result = resume(tmp_path / "ck", corpus, {"max_steps": 20})
    assert (result.stop_reason, result.steps) == ("max-steps", 20)
    assert read_info(tmp_path / "ck").training.steps == 20
    assert read_info(tmp_path / "ck").training.config.max_steps == 20


def test_a_run_saved_before_adam_beta1_existed_resumes_with_the_momentum_it_had(tmp_path, corpus, monkeypatch):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=6))
    config_path = tmp_path / "ck" / "config.json"
    record = json.loads(config_path.read_text())
    del record["training"]["adam_beta1"]  # as textgen wrote it when momentum was fixed at 0.9
    config_path.write_text(json.dumps(record))
    betas = []
    make_optimizer = textgen.training.loop.make_optimizer
    monkeypatch.setattr(textgen.training.loop, "make_optimizer",
                        lambda model, config: betas.append(config.adam_beta1) or make_optimizer(model, config))
    resume(tmp_path / "ck", corpus, {"max_steps": 8})
    assert betas == [0.9] and TrainConfig().adam_beta1 == 0.8


def test_resume_finds_the_training_file_where_it_was(tmp_path, docs_text):
    text_file = tmp_path / "text.txt"
    text_file.write_text(docs_text[:12_000], encoding="utf-8")
    from textgen.data.corpus import load_corpus

    train(load_corpus(str(text_file)), tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=6))
    assert resume(tmp_path / "ck", None, {"max_steps": 9}).steps == 9
    text_file.write_text(docs_text[:12_000] + "more", encoding="utf-8")
    with pytest.raises(TextgenError, match="has changed since training"):
        resume(tmp_path / "ck", None, {"max_steps": 12})


def test_resume_refuses_another_text(tmp_path, corpus, docs_text):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=4))
    with pytest.raises(TextgenError, match="is not the text .* was trained on"):
        resume(tmp_path / "ck", corpus_of(docs_text[:9_000]))


def test_resume_without_trainer_state_or_with_a_damaged_one_is_a_clear_error(tmp_path, corpus):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=4))
    trainer = tmp_path / "ck" / TRAINER_FILE
    trainer.write_bytes(trainer.read_bytes()[:1000])
    with pytest.raises(TextgenError, match=f"{TRAINER_FILE} is corrupt"):
        resume(tmp_path / "ck", corpus)
    trainer.unlink()
    with pytest.raises(TextgenError, match="cannot be resumed: it has no trainer.safetensors"):
        resume(tmp_path / "ck", corpus)
    assert load_checkpoint(tmp_path / "ck").model is not None  # sampling never needed the file


def test_a_full_disk_while_saving_the_trainer_state_keeps_the_previous_one(tmp_path, corpus, monkeypatch):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=8, eval_every=4))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}

    def disk_full(path, trainer):
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(textgen.checkpoint.format, "_write_trainer_state", disk_full)
    with pytest.raises(TextgenError, match="No space left on device.*unchanged"):
        resume(tmp_path / "ck", corpus, {"max_steps": 20})
    after = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    assert after[TRAINER_FILE] == before[TRAINER_FILE]
    assert after["model.safetensors"] == before["model.safetensors"]
    assert not any(name.endswith(".tmp") for name in after)
    monkeypatch.undo()
    assert resume(tmp_path / "ck", corpus, {"max_steps": 12}).steps == 12


# --- stopping early and averaging -------------------------------------------------------------


def test_patience_stops_after_that_many_validations_without_a_new_best(tmp_path, corpus, monkeypatch):
    scores = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0])
    monkeypatch.setattr(textgen.training.run_data, "total_loss", lambda *args, **kwargs: (next(scores) * 100, 100))
    result = train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=200, eval_every=5, patience=3))
    assert result.stop_reason == "early-stop"
    assert result.steps == 25  # validations at steps 5, 10 (best), 15, 20, 25: three without a new best
    assert read_info(tmp_path / "ck").best.step == 10
    assert [row.step for row in read_metrics(tmp_path / "ck")] == [5, 10, 15, 20, 25]


def test_the_saved_model_is_the_weight_average_and_resume_keeps_training_the_live_weights(tmp_path, corpus):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=10, ema_decay=0.8))
    saved_model = weights(tmp_path / "ck")
    live = {k[len("weights."):]: v for k, v in load_trainer_state(tmp_path / "ck").tensors.items()
            if k.startswith("weights.")}
    assert live.keys() == saved_model.keys()
    assert not all(torch.equal(live[name], saved_model[name]) for name in live)
    average = {k: v for k, v in load_trainer_state(tmp_path / "ck").tensors.items() if k.startswith("average.")}
    assert len(average) == len(live)


def test_evaluation_scores_the_averaged_weights(tmp_path, corpus):
    from textgen.data import split_text
    from textgen.evaluation import evaluate_text

    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=10, ema_decay=0.8))
    loaded = load_checkpoint(tmp_path / "ck")
    before, held_out = split_text(corpus.text, 0.1)
    figures = evaluate_text(loaded.model, loaded.tokenizer, held_out, before)
    assert figures.loss == pytest.approx(loaded.info.best.val_loss, rel=1e-6)


# --- precision ------------------------------------------------------------------------------------
# Choosing the precision from the device is tested with faked device queries in test_devices.py;
# here bfloat16 really trains, where this CPU can run it.


@pytest.mark.skipif(bfloat16_support(torch.device("cpu")) == UNSUPPORTED,
                    reason="this CPU cannot run a bfloat16 LSTM (test_devices.py checks the message instead)")
def test_bfloat16_training_learns_and_saves_float32_weights(tmp_path, corpus):
    result = train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=30, precision="bfloat16"))
    assert result.best.val_loss < 3.5  # from about 4.2 (a uniform guess over the vocabulary)
    assert all(p.dtype == torch.float32 for p in load_checkpoint(tmp_path / "ck").model.parameters())


@pytest.mark.skipif(bfloat16_support(torch.device("cpu")) != UNSUPPORTED,
                    reason="this CPU runs bfloat16; the refusal is tested with a faked CPU in test_devices.py")
def test_bfloat16_is_refused_in_one_line_where_the_cpu_cannot_run_it(tmp_path, corpus):
    with pytest.raises(TextgenError, match="^precision bfloat16 cannot run on this CPU"):
        train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=3, precision="bfloat16"))
    assert not (tmp_path / "ck").exists()


# --- presets --------------------------------------------------------------------------------------


def test_resuming_a_finished_run_without_a_new_limit_says_so_naming_the_limit_fields(tmp_path, corpus):
    train(corpus, tmp_path / "ck", TINY, TokenizerConfig(), quick(max_steps=6))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()}
    with pytest.raises(TextgenError, match="already reached its limit at step 6 ") as refused:
        resume(tmp_path / "ck", corpus)
    assert str(refused.value).endswith("give a larger max_steps, epochs or max_time to train on")
    assert refused.value.worded(lambda field: field.upper()).endswith("larger MAX_STEPS, EPOCHS or MAX_TIME to train on")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ck").iterdir()} == before
