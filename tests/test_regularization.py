"""Tests for textgen.training.regularization: AR and TAR as Merity et al. define them, counted over
scored positions only, and what they do to a real training run."""

from __future__ import annotations

import hashlib

import pytest
import torch

from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data import IGNORE
from textgen.data.corpus import Corpus
from textgen.training import StepReport, TrainingCallbacks, train
from textgen.training.regularization import activation_penalties


def test_ar_is_the_mean_square_and_tar_the_mean_square_step():
    top = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [4.0, 0.0]]])  # one row, three steps, two units
    targets = torch.zeros(1, 3, dtype=torch.long)
    squares = (1 + 9 + 4 + 4 + 16 + 0) / 6
    steps = ((1 + 1) + (4 + 4)) / 4  # (2-1, 2-3), then (4-2, 0-2), squared
    assert activation_penalties(top, targets, 1.0, 0.0).item() == pytest.approx(squares)
    assert activation_penalties(top, targets, 0.0, 1.0).item() == pytest.approx(steps)
    assert activation_penalties(top, targets, 2.0, 0.5).item() == pytest.approx(2 * squares + 0.5 * steps)
    assert activation_penalties(top, targets, 0.0, 0.0).item() == 0.0


def test_padding_after_a_document_is_neither_penalised_nor_counted():
    top = torch.tensor([[[1.0], [3.0], [100.0], [-50.0]]])  # the last two steps are padding
    targets = torch.tensor([[5, 6, IGNORE, IGNORE]])
    assert activation_penalties(top, targets, 1.0, 0.0).item() == pytest.approx((1 + 9) / 2)
    assert activation_penalties(top, targets, 0.0, 1.0).item() == pytest.approx(4.0)  # only (1 -> 3)
    nothing_scored = torch.full((1, 4), IGNORE)
    assert activation_penalties(top, nothing_scored, 1.0, 1.0).item() == 0.0


def test_a_bfloat16_output_is_penalised_in_float32_and_passes_gradients_back():
    top = torch.randn(2, 5, 3, dtype=torch.bfloat16, requires_grad=True)
    penalty = activation_penalties(top, torch.zeros(2, 5, dtype=torch.long), 2.0, 1.0)
    assert penalty.dtype == torch.float32
    penalty.backward()
    assert top.grad is not None and top.grad.abs().sum() > 0


class StepLosses(TrainingCallbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, report: StepReport) -> None:
        self.losses.append(report.train_loss)


def test_a_run_with_penalties_reports_plain_cross_entropy_and_keeps_its_top_layer_quieter(tmp_path, docs_text):
    from textgen.api import load_checkpoint

    text = docs_text[:12_000]
    corpus = Corpus(text, "test-text", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())
    model = ModelConfig(layers=2, hidden_size=32, embedding_size=16)
    runs = {}
    for name, penalties in (("plain", {}), ("penalised", {"activation_penalty": 4.0, "activation_change_penalty": 2.0})):
        watcher = StepLosses()
        config = TrainConfig(seq_len=32, batch_size=16, learning_rate=1e-2, warmup_steps=5, device="cpu",
                             max_steps=40, eval_every=40, **penalties)
        train(corpus, tmp_path / name, model, TokenizerConfig(), config, watcher)
        loaded = load_checkpoint(tmp_path / name)
        ids = torch.tensor([loaded.tokenizer.encode(text[-2000:])])
        with torch.no_grad():
            loaded.model.eval()
            top = loaded.model(ids, with_top_output=True)[2]
        runs[name] = (watcher.losses, top.pow(2).mean().item())
    (plain_losses, plain_square), (penalised_losses, penalised_square) = runs["plain"], runs["penalised"]
    # The same first batch through the same initial weights: the reported loss leaves the penalty out.
    assert penalised_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)
    assert penalised_losses[1:] != plain_losses[1:]  # yet the penalty moved the weights
    assert penalised_square < 0.1 * plain_square
