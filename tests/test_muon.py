"""Tests for `optimizer = "muon"` (textgen/training/optimization.py): Muon moves the recurrent
layers' weight matrices and AdamW everything else, the schedule sets both parts' rates, a Muon
step is orthogonalised, and a run stopped and resumed gives the losses of one run straight through
(the optimiser's state saved and restored by the trainer state)."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from cli_support import assert_one_line_error
from test_cells import LossRecorder
from textgen.config import ModelConfig, OptionError, TokenizerConfig, TrainConfig
from textgen.data.corpus import Corpus
from textgen.model import CELL_KINDS, RNNLanguageModel
from textgen.training import resume, train
import textgen.training.optimization
from textgen.training.optimization import Muon, MuonWithAdamW, make_optimizer, orthogonalised


def build(cell: str = "lstm", skip_connections: bool = True) -> RNNLanguageModel:
    torch.manual_seed(0)
    return RNNLanguageModel(ModelConfig(vocab_size=30, cell=cell, layers=2, hidden_size=16, embedding_size=8,
                                        skip_connections=skip_connections))


def muon(**settings) -> TrainConfig:
    return TrainConfig(optimizer="muon", **settings)


@pytest.mark.parametrize("cell", CELL_KINDS)
@pytest.mark.parametrize("skip_connections", [True, False])
def test_muon_takes_the_recurrent_matrices_and_adamw_every_other_parameter(cell, skip_connections):
    model = build(cell, skip_connections)
    optimizer = make_optimizer(model, muon())
    muon_part, adamw_part = optimizer.parts
    assert isinstance(muon_part, Muon) and isinstance(adamw_part, torch.optim.AdamW)
    in_muon = {id(p) for group in muon_part.param_groups for p in group["params"]}
    expected = {id(weights[name]) for weights in model.layer_weights() for name in ("weight_ih", "weight_hh")
                if weights[name] is not None}
    assert in_muon == expected
    in_adamw = [p for group in adamw_part.param_groups for p in group["params"]]
    assert {id(p) for p in in_adamw} == {id(p) for p in model.parameters()} - expected
    assert {id(model.embedding.weight), id(model.decoder.weight), id(model.decoder.bias)} <= {id(p) for p in in_adamw}
    assert [p for group in optimizer.param_groups for p in group["params"]] == \
        [p for part in optimizer.parts for group in part.param_groups for p in group["params"]]


def test_adamw_stays_the_default_and_an_unknown_optimizer_is_refused():
    assert isinstance(make_optimizer(build(), TrainConfig()), torch.optim.AdamW)
    with pytest.raises(OptionError) as raised:
        TrainConfig(optimizer="sgd")
    assert (raised.value.field, str(raised.value)) == ("optimizer", "optimizer must be one of adamw, muon")
    with pytest.raises(OptionError) as raised:
        TrainConfig(optimizer="muon", muon_momentum=1.0)
    assert raised.value.field == "muon_momentum"


def test_the_schedule_sets_the_rate_of_both_parts():
    optimizer = make_optimizer(build(), muon(learning_rate=1e-3))
    for group in optimizer.param_groups:  # as the training loop sets it at every step
        group["lr"] = 0.25
    assert [group["lr"] for part in optimizer.parts for group in part.param_groups] == [0.25] * 3


def test_a_muon_step_moves_a_matrix_by_an_orthogonalised_update_of_adamws_size():
    model = build()
    optimizer = make_optimizer(model, muon(learning_rate=0.01, weight_decay=0.0, muon_momentum=0.0))
    matrix = model.layer_weights()[0]["weight_hh"]
    before, embedding = matrix.detach().clone(), model.embedding.weight.detach().clone()
    # A gradient whose singular values span two orders of magnitude.
    u, _, v = torch.linalg.svd(torch.randn(matrix.shape, generator=torch.Generator().manual_seed(0)),
                               full_matrices=False)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    matrix.grad = u @ torch.diag(torch.logspace(0, -2, min(matrix.shape))) @ v
    optimizer.step()
    scale = 0.01 * 0.2 * max(matrix.shape) ** 0.5  # Muon's step, sized as AdamW's ("match_rms_adamw")
    singular = torch.linalg.svdvals((before - matrix.detach()) / scale)
    assert singular.max() < 1.5 and singular.min() > 0.4  # Newton-Schulz's near-orthogonal result
    assert torch.equal(model.embedding.weight, embedding)  # AdamW's, with a zero gradient and no decay


def test_in_bfloat16_a_step_is_torchs_own_muon_step():
    """torch.optim.Muon always orthogonalises in bfloat16; textgen's does so where it is native."""
    generator = torch.Generator().manual_seed(3)
    ours, theirs = (torch.nn.Parameter(torch.randn(48, 16, generator=torch.Generator().manual_seed(0)))
                    for _ in range(2))
    mine = Muon([ours], lr=0.02, weight_decay=0.1, momentum=0.9, dtype=torch.bfloat16)
    torchs = torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        gradient = torch.randn(48, 16, generator=generator)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        mine.step()
        torchs.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_where_bfloat16_is_not_native_the_iteration_runs_in_float32(monkeypatch):
    monkeypatch.setattr(textgen.training.optimization, "training_dtype", lambda precision, device: None)
    assert make_optimizer(build(), muon()).parts[0].dtype == torch.float32
    matrix = torch.randn(60, 20, generator=torch.Generator().manual_seed(0))
    result = orthogonalised(matrix, torch.float32)
    assert result.dtype == torch.float32 and result.shape == (60, 20)
    singular = torch.linalg.svdvals(result)
    assert singular.max() < 1.5 and singular.min() > 0.5
    # the same directions as the exact U V^T
    u, _, v = torch.linalg.svd(matrix, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(result.flatten(), (u @ v).flatten(), dim=0) > 0.95


def test_a_loaded_state_dict_continues_exactly_as_the_optimizer_it_came_from():
    def stepped(model: RNNLanguageModel, optimizer: torch.optim.Optimizer, steps: range) -> None:
        for seed in steps:
            ids = torch.randint(0, 30, (4, 9), generator=torch.Generator().manual_seed(seed))
            optimizer.zero_grad()
            logits, _ = model(ids[:, :-1])
            torch.nn.functional.cross_entropy(logits.reshape(-1, 30), ids[:, 1:].reshape(-1)).backward()
            optimizer.step()

    first, second = build(), build()
    config = muon(learning_rate=1e-2)
    first_optimizer = make_optimizer(first, config)
    stepped(first, first_optimizer, range(3))
    second.load_state_dict(first.state_dict())
    second_optimizer = make_optimizer(second, config)
    # A copy, as the trainer state saves one: loading keeps the tensors it is given, which the first goes on changing.
    second_optimizer.load_state_dict(copy.deepcopy(first_optimizer.state_dict()))
    assert isinstance(second_optimizer, MuonWithAdamW)
    assert all(part.state is second_optimizer.state for part in second_optimizer.parts)
    stepped(first, first_optimizer, range(3, 6))
    stepped(second, second_optimizer, range(3, 6))
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_a_muon_run_resumes_with_identical_losses(tmp_path, docs_text, cell):
    text = docs_text[:12_000]
    corpus = Corpus(text, "test-text", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())
    model = ModelConfig(cell=cell, layers=2, hidden_size=24, embedding_size=8, dropout=0.1)
    config = muon(seq_len=16, batch_size=8, learning_rate=1e-2, warmup_steps=3, device="cpu", max_steps=14,
                  eval_every=5)
    whole, first, second = LossRecorder(), LossRecorder(stop_at=6), LossRecorder()
    train(corpus, tmp_path / "whole", model, TokenizerConfig(), config, whole)
    assert sum(whole.losses[-4:]) / 4 < whole.losses[0]
    assert train(corpus, tmp_path / "split", model, TokenizerConfig(), config, first).steps == 6
    assert resume(tmp_path / "split", corpus, callbacks=second).steps == 14
    assert first.losses + second.losses == whole.losses  # exactly, step for step


def test_the_command_line_refuses_an_unknown_optimizer_in_one_line(cli):
    assert_one_line_error(cli("train", "--optimizer", "sgd", "--max-steps", "1"),
                          "error: --optimizer must be one of adamw, muon")
