"""Tests for textgen.training.optimization: the learning-rate schedule, the optimiser's parameter groups
and momentum, and the weight average's swap."""

from __future__ import annotations

import pytest
import torch

from textgen.config import ModelConfig, TrainConfig
from textgen.model import RNNLanguageModel
from textgen.training.optimization import WeightAverage, averaged_weights, learning_rate_at, make_optimizer


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    config = TrainConfig(learning_rate=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    warm_up = [learning_rate_at(config, step, 0.0) for step in range(10)]
    assert warm_up == pytest.approx([1e-3 * (step + 1) for step in range(10)])
    assert learning_rate_at(config, 10, 0.0) == pytest.approx(1e-2)
    assert learning_rate_at(config, 50, 0.5) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert learning_rate_at(config, 99, 1.0) == pytest.approx(1e-3)
    assert learning_rate_at(config, 200, 1.7) == pytest.approx(1e-3)  # past the end it stays at the floor
    decay = [learning_rate_at(config, 10 + i, i / 20) for i in range(21)]
    assert decay == sorted(decay, reverse=True)


def test_learning_rate_without_warm_up_starts_at_the_full_rate():
    config = TrainConfig(learning_rate=3e-3, warmup_steps=0, min_lr_ratio=0.0)
    assert learning_rate_at(config, 0, 0.0) == pytest.approx(3e-3)
    assert learning_rate_at(config, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_the_optimizer_decays_weight_matrices_only_with_the_configured_momentum():
    model = RNNLanguageModel(ModelConfig(vocab_size=20, hidden_size=16, embedding_size=8))
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.2, adam_beta1=0.7))
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.2 and all(p.dim() >= 2 for p in decayed["params"])
    assert kept["weight_decay"] == 0.0 and all(p.dim() == 1 for p in kept["params"])
    assert len(decayed["params"]) + len(kept["params"]) == len(list(model.parameters()))
    assert decayed["betas"] == (0.7, 0.99)


def test_the_weight_average_is_swapped_in_and_back_out():
    model = RNNLanguageModel(ModelConfig(vocab_size=20, hidden_size=16, embedding_size=8))
    average = WeightAverage(model, decay=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(step=100)  # decay 0.5: halfway between the start and now
    live = [p.detach().clone() for p in model.parameters()]
    with averaged_weights(average):
        for p, s in zip(model.parameters(), start):
            torch.testing.assert_close(p, s + 0.5)
    for p, l in zip(model.parameters(), live):
        assert torch.equal(p, l)
