"""Tests for textgen.model: shapes, the carried state, weight tying and config checks."""

from __future__ import annotations

import pytest
import torch

from textgen.config import INPUT_GATED_CELLS
from textgen.model import CELL_KINDS, detach_state, select_state, state_parts, state_rows
from textgen.tokenizers import CharTokenizer

cells = pytest.mark.parametrize("cell", CELL_KINDS)
# The kinds with hidden-to-hidden weights for weight drop to drop (test_mincells.py: the others refuse it).
recurrent_cells = pytest.mark.parametrize("cell", [name for name in CELL_KINDS if name not in INPUT_GATED_CELLS])


@pytest.fixture(scope="module")
def prose_ids(prose) -> tuple[CharTokenizer, torch.Tensor]:
    tokenizer = CharTokenizer.from_text(prose)
    return tokenizer, torch.tensor(tokenizer.encode(prose))


skip = pytest.mark.parametrize("skip_connections", [True, False])


@cells
@skip
@pytest.mark.parametrize("layers", [1, 2])
def test_logits_and_state_have_the_documented_shapes_for_every_cell(make_model, prose_ids, cell, layers,
                                                                    skip_connections):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=layers, hidden_size=24,
                       skip_connections=skip_connections)
    batch = ids[: 3 * 40].view(3, 40)
    logits, state = model(batch)
    assert logits.shape == (3, 40, tokenizer.vocab_size)
    # as torch's own modules take it: one tensor alone, several in a tuple
    parts = len(CELL_KINDS[cell].state_parts)
    assert isinstance(state, torch.Tensor if parts == 1 else tuple)
    assert [s.shape for s in state_parts(state)] == [(layers, 3, 24)] * parts


@cells
def test_init_state_is_zero_and_is_what_forward_starts_from(make_model, prose_ids, cell):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2)
    state = model.init_state(2)
    assert all(p.shape == (2, 2, 32) and not p.any() for p in state_parts(state))
    batch = ids[:60].view(2, 30)
    torch.testing.assert_close(model(batch)[0], model(batch, state)[0], rtol=0, atol=0)


@cells
@skip
def test_feeding_two_halves_with_the_state_carried_equals_one_call(make_model, prose_ids, cell, skip_connections):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2, skip_connections=skip_connections)
    batch = ids[:2 * 90].view(2, 90)
    with torch.no_grad():
        whole, whole_state = model(batch)
        first, state = model(batch[:, :37])
        second, halves_state = model(batch[:, 37:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(state_parts(halves_state), state_parts(whole_state), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and the carried state matters: starting the second half afresh gives other logits
    fresh, _ = model(batch[:, 37:])
    assert not torch.allclose(fresh, second, atol=1e-4)


@cells
def test_token_by_token_feeding_equals_one_call(make_model, prose_ids, cell):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell)
    sequence = ids[:25].view(1, 25)
    with torch.no_grad():
        whole, _ = model(sequence)
        state, steps = None, []
        for t in range(25):
            logits, state = model(sequence[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=1e-5, atol=1e-5)


@skip
def test_skip_connections_feed_the_embedding_to_every_layer_and_every_layer_to_the_output(make_model, skip_connections):
    model = make_model(40, layers=3, hidden_size=24, embedding_size=8, skip_connections=skip_connections)
    inputs = [weights["weight_ih"].shape[1] for weights in model.layer_weights()]
    if skip_connections:
        assert inputs == [8, 8 + 24, 8 + 24] and model.decoder.in_features == 3 * 24
    else:
        assert inputs == [8, 24, 24] and model.decoder.in_features == 24


def test_tie_weights_shares_one_tensor_between_embedding_and_decoder(make_model):
    model = make_model(40, hidden_size=16, embedding_size=16, tie_weights=True, skip_connections=False)
    assert model.decoder.weight is model.embedding.weight
    untied = make_model(40, hidden_size=16, embedding_size=16)
    assert model.num_parameters() == untied.num_parameters() - 40 * 16
    # one tensor: a change through the embedding shows in the decoder
    with torch.no_grad():
        model.embedding.weight[3, 5] = 7.0
    assert model.decoder.weight[3, 5].item() == 7.0


def test_dropout_is_active_in_training_mode_only(make_model, prose_ids):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, layers=2, dropout=0.5)
    batch = ids[:40].view(1, 40)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(batch)[0], model(batch)[0], rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(batch)[0], model(batch)[0])


@cells
@skip
def test_the_top_output_is_the_top_layers_and_leaves_logits_and_state_alone(make_model, prose_ids, cell,
                                                                            skip_connections):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2, hidden_size=12, skip_connections=skip_connections)
    model.eval()
    batch = ids[: 2 * 25].view(2, 25)
    with torch.no_grad():
        logits, state = model(batch)
        same_logits, same_state, top = model(batch, with_top_output=True)
    torch.testing.assert_close(same_logits, logits, rtol=0, atol=0)
    assert top.shape == (2, 25, 12)
    # The top layer's output at the last step is its final hidden state.
    h = state_parts(same_state)[0]
    torch.testing.assert_close(top[:, -1], h[-1], rtol=0, atol=0)
    assert not torch.allclose(top[:, -1], h[0])


@recurrent_cells
@skip
def test_weight_drop_drops_recurrent_links_while_training_and_keeps_the_weights(make_model, prose_ids, cell,
                                                                                skip_connections):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2, hidden_size=16, weight_drop=0.5,
                       skip_connections=skip_connections)
    batch = ids[:2 * 30].view(2, 30)
    kept = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        eval_logits = model(batch)[0]
        model.train()
        torch.manual_seed(1)
        dropped = model(batch)[0]
    # The first step reads a zero state, so dropping recurrent weights cannot change it; later steps differ.
    torch.testing.assert_close(dropped[:, 0], eval_logits[:, 0])
    assert not torch.allclose(dropped[:, 1:], eval_logits[:, 1:])
    model(batch)[0].sum().backward()
    for name, param in model.named_parameters():
        assert torch.equal(param, kept[name]), name  # the mask is applied to a copy, never stored
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():  # the same kernels as the first reading
        torch.testing.assert_close(model(batch)[0], eval_logits, rtol=0, atol=0)


def test_embedding_dropout_drops_whole_token_types(make_model):
    vocab = 50
    model = make_model(vocab, layers=1, hidden_size=8, embedding_dropout=0.5)
    model.train()
    torch.manual_seed(0)
    ids = torch.arange(vocab).repeat(2).view(2, vocab)  # every type twice, in both rows
    embedded = model._embed(ids)
    zero = embedded.abs().sum(-1) == 0
    assert 0 < int(zero[0].sum()) < vocab
    assert torch.equal(zero[0], zero[1])  # a type dropped in one place is dropped everywhere
    scaled = ~zero[0]
    torch.testing.assert_close(embedded[0, scaled], 2.0 * model.embedding.weight[scaled])
    model.eval()
    torch.testing.assert_close(model._embed(ids), model.embedding(ids))


@pytest.mark.parametrize("skip_connections", [True, False])
def test_lstm_forget_gate_bias_starts_at_one(make_model, skip_connections):
    model = make_model(30, cell="lstm", layers=2, hidden_size=8, skip_connections=skip_connections)
    for weights in model.layer_weights():
        bias_ih, bias_hh = weights["bias_ih"], weights["bias_hh"]
        # PyTorch orders the gates input, forget, cell, output
        assert bias_ih[8:16].tolist() == [1.0] * 8
        assert bias_ih[:8].abs().sum() == 0 and bias_ih[16:].abs().sum() == 0
        assert bias_hh.abs().sum() == 0


@cells
def test_detach_state_keeps_values_and_cuts_the_graph(make_model, prose_ids, cell):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell).train()
    first, state = model(ids[:20].view(2, 10))
    parts = state_parts(state)
    assert all(p.requires_grad and p.grad_fn is not None for p in parts)
    detached = detach_state(state)
    assert type(detached) is type(state)
    for before, after in zip(parts, state_parts(detached), strict=True):
        assert after.grad_fn is None and not after.requires_grad
        assert torch.equal(before, after)
    first.sum().backward()  # frees the first window's graph, as a training step does
    # the next window's loss reaches the weights without going back into the freed window
    model.zero_grad()
    model(ids[20:40].view(2, 10), detached)[0].sum().backward()
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0
    # whereas the undetached state still leads into it
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        model(ids[20:40].view(2, 10), state)[0].sum().backward()


@cells
def test_select_state_and_state_rows_pick_batch_rows(make_model, prose_ids, cell):
    tokenizer, ids = prose_ids
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2)
    with torch.no_grad():
        _, state = model(ids[:40].view(4, 10))
        _, row_two = model(ids[20:30].view(1, 10))
    picked, copied = select_state(state, slice(2, 3)), state_rows(state, slice(2, 3))
    assert type(picked) is type(copied) is type(state)
    for a, b, c in zip(state_parts(picked), state_parts(copied), state_parts(row_two), strict=True):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
        assert torch.equal(a, b) and b.is_contiguous()
    # state_rows copies: one process's share of a saved batch does not keep the whole batch alive
    assert state_parts(copied)[0].untyped_storage().data_ptr() != state_parts(state)[0].untyped_storage().data_ptr()

