"""Tests for minGRU and minLSTM (textgen/model/cells/input_gated.py and its two kinds): the
log-space parallel scan a GPU trains a window with equals the step-by-step recurrence a CPU trains
it with and the fast step runs, in value and in gradient; the paper's gate equations hold; autocast leaves the scan in float32;
weight drop, which needs hidden-to-hidden weights, is refused for them. (Training, exact resume,
sampling and the insight views are checked for every registered kind in test_cells.py.)"""

from __future__ import annotations

import pytest
import torch

from cli_support import assert_one_line_error
from textgen.config import INPUT_GATED_CELLS, ModelConfig, OptionError
from textgen.model import CELL_KINDS, RNNLanguageModel
import textgen.model.cells.input_gated as input_gated_module
from textgen.model.cells.input_gated import SCAN_CHUNK, InputGatedKind, positive, recurrence, scan, sequential
from textgen.model.cells.mingru import MinGRU
from textgen.model.cells.minlstm import MinLSTM

input_gated = pytest.mark.parametrize("kind", [MinGRU(), MinLSTM()], ids=["mingru", "minlstm"])


def random_window(time: int, seed: int, batch: int = 3, hidden: int = 16, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    update, candidate, h0 = (torch.randn(*shape, generator=generator) * scale for shape in
                             ((batch, time, hidden), (batch, time, hidden), (batch, hidden)))
    return update, candidate, h0


@pytest.mark.parametrize("time", [1, 7, SCAN_CHUNK, SCAN_CHUNK + 1, 256, 1000])
def test_the_parallel_scan_equals_the_sequential_recurrence(time):
    update, candidate, h0 = random_window(time, seed=time)
    torch.testing.assert_close(scan(update, candidate, h0), sequential(update, candidate, h0), rtol=1e-5, atol=1e-5)


def test_the_scan_holds_with_gates_driven_hard_towards_0_and_1():
    update, candidate, h0 = random_window(300, seed=3, scale=6.0)
    torch.testing.assert_close(scan(update, candidate, h0), sequential(update, candidate, h0), rtol=1e-5, atol=1e-5)


def test_the_scan_gives_the_gradients_of_the_sequential_recurrence():
    leaves = [t.requires_grad_() for t in random_window(2 * SCAN_CHUNK + 5, seed=11)]
    weights = torch.randn(2 * SCAN_CHUNK + 5, 16, generator=torch.Generator().manual_seed(1))
    gradients = []
    for run in (scan, sequential):
        (run(*leaves) * weights).sum().backward()
        gradients.append([leaf.grad.clone() for leaf in leaves])
        for leaf in leaves:
            leaf.grad = None
    for got, expected in zip(*gradients):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_the_first_step_is_the_papers_equation():
    update, candidate, h0 = random_window(1, seed=2)
    z = torch.sigmoid(update[:, 0])
    expected = (1 - z) * h0 + z * positive(candidate[:, 0])
    torch.testing.assert_close(scan(update, candidate, h0)[:, 0], expected)


def test_g_is_positive_and_continuous_at_zero():
    x = torch.tensor([-30.0, -1.0, -1e-6, 0.0, 1e-6, 2.0])
    assert (positive(x) > 0).all()
    torch.testing.assert_close(positive(x)[2:5], torch.full((3,), 0.5))
    assert positive(torch.tensor(2.0)).item() == 2.5


def test_minlstm_normalises_its_forget_and_input_gates():
    kind, hidden = MinLSTM(), 5
    pre = torch.randn(4, 3 * hidden, generator=torch.Generator().manual_seed(0))
    h = torch.randn(4, hidden, generator=torch.Generator().manual_seed(1))
    forget, write = torch.sigmoid(pre[:, :hidden]), torch.sigmoid(pre[:, hidden : 2 * hidden])
    expected = (forget * h + write * positive(pre[:, 2 * hidden :])) / (forget + write)
    update_logit, candidate = kind.split(pre)
    torch.testing.assert_close(sequential(update_logit[:, None], candidate[:, None], h)[:, 0], expected)


@input_gated
@pytest.mark.parametrize("layers", [1, 2])
def test_a_stack_with_batch_first_off_gives_the_same_output_and_state(kind, layers):
    torch.manual_seed(0)
    first = kind.build(input_size=6, hidden_size=8, num_layers=layers, batch_first=True)
    second = kind.build(input_size=6, hidden_size=8, num_layers=layers, batch_first=False)
    second.load_state_dict(first.state_dict())
    x, h0 = torch.randn(2, 9, 6), torch.randn(layers, 2, 8)
    output, state = first(x, h0)
    output_t, state_t = second(x.transpose(0, 1), h0)
    torch.testing.assert_close(output_t.transpose(0, 1), output)
    torch.testing.assert_close(state_t, state)
    torch.testing.assert_close(state[-1], output[:, -1])


@input_gated
def test_a_cpu_runs_the_window_step_by_step_and_the_scan_gives_the_same_layers(kind, monkeypatch):
    assert recurrence(torch.device("cpu")) is sequential and recurrence(torch.device("cuda")) is scan
    torch.manual_seed(0)
    module = kind.build(input_size=6, hidden_size=8, num_layers=2, batch_first=True)
    x, h0 = torch.randn(2, 70, 6), torch.randn(2, 2, 8)
    step_by_step = module(x, h0)
    monkeypatch.setattr(input_gated_module, "recurrence", lambda device: scan)
    by_scan = module(x, h0)
    for got, expected in zip(by_scan, step_by_step):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@input_gated
def test_under_bfloat16_autocast_the_scan_and_the_state_stay_float32(kind):
    module = kind.build(input_size=6, hidden_size=8, batch_first=True)
    x = torch.randn(2, 40, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, state = module(x)
    assert output.dtype == torch.float32 and state.dtype == torch.float32
    plain, _ = module(x)
    torch.testing.assert_close(output, plain, rtol=0.05, atol=0.05)  # only the input product was bfloat16


@input_gated
def test_the_layers_have_no_hidden_to_hidden_weights_and_their_gate_biases_start_set(kind):
    model = RNNLanguageModel(ModelConfig(vocab_size=20, cell=kind.name, layers=2, hidden_size=8, embedding_size=4))
    for weights in model.layer_weights():
        assert weights["weight_hh"] is None and weights["bias_hh"] is None
        assert weights["weight_ih"].shape[0] == kind.blocks * 8
        assert weights["bias_ih"][:8].tolist() == [-1.0 if kind.name == "mingru" else 1.0] * 8


def test_weight_drop_is_refused_exactly_for_the_kinds_without_hidden_to_hidden_weights():
    for name, kind in CELL_KINDS.items():
        has_recurrent_weights = hasattr(kind.build(input_size=3, hidden_size=4), "weight_hh_l0")
        assert (name not in INPUT_GATED_CELLS) == has_recurrent_weights, name
        assert isinstance(kind, InputGatedKind) == (name in INPUT_GATED_CELLS), name
        if has_recurrent_weights:
            ModelConfig(vocab_size=10, cell=name, weight_drop=0.2)
            continue
        with pytest.raises(OptionError) as raised:
            ModelConfig(vocab_size=10, cell=name, weight_drop=0.2)
        assert raised.value.field == "weight_drop"
        assert raised.value.worded(lambda field: f"--{field.replace('_', '-')}") == (
            f"--weight-drop drops links of the hidden-to-hidden matrices, and --cell {name} has none "
            "(its gates read the input alone): use --dropout instead")


def test_the_command_line_refuses_weight_drop_for_mingru_in_one_line(cli):
    assert_one_line_error(cli("train", "--cell", "mingru", "--weight-drop", "0.2", "--max-steps", "1"),
                          "error: --weight-drop drops links of the hidden-to-hidden matrices, and --cell mingru")
