"""Tests for textgen.insight: memory reach and surprisal checked against token-by-token loops by
hand, the comparison of models on one text, and the views through `textgen evaluate`."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import textgen
from conftest import PROSE
from textgen.cli import main
from textgen.config import TokenizerConfig
from textgen.evaluation import evaluate_text, total_loss
from textgen.insight import cell_report, compare, memory_reach, surprisal, text_features
from textgen.model import CELL_KINDS
from textgen.tokenizers import CharTokenizer, build_tokenizer

TEXT = PROSE[:300]


@pytest.fixture(scope="module")
def char_setup(prose):
    tokenizer = CharTokenizer.from_text(prose)
    torch.manual_seed(3)
    from textgen.config import ModelConfig
    from textgen.model import RNNLanguageModel

    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, cell="gru", layers=2, hidden_size=16,
                                         embedding_size=8)).eval()
    return model, tokenizer, tokenizer.encode(TEXT)


def nats_by_hand(model, ids: list[int], reset_every: int | None) -> float:
    """-log p of each token after the first, one token at a time, the state zeroed every k predictions."""
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(len(ids) - 1):
            if reset_every and t % reset_every == 0:
                state = None
            logits, state = model(torch.tensor([[ids[t]]]), state)
            total -= torch.log_softmax(logits[0, -1].double(), dim=-1)[ids[t + 1]].item()
    return total


def test_memory_reach_resets_the_state_every_k_tokens_as_a_loop_by_hand_does(char_setup):
    model, _, ids = char_setup
    points = memory_reach(model, ids, characters=len(TEXT) - 1, longest=64)
    assert [p.reset_every for p in points] == [1, 2, 4, 8, 16, 32, 64, None]
    for point in points:
        nats = nats_by_hand(model, ids, point.reset_every)
        assert point.nats_per_token == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
        assert point.bits_per_char == pytest.approx(nats / math.log(2) / (len(TEXT) - 1), rel=1e-5)


def test_surprisal_adds_up_to_the_texts_loss_and_names_the_preferred_tokens(char_setup):
    model, tokenizer, ids = char_setup
    tokens = surprisal(model, tokenizer, ids, top=3, chunk=50)  # several chunks, the state carried across
    assert "".join(t.text for t in tokens) == TEXT[1:]
    nats, _ = total_loss(model, torch.tensor(ids), rows=1)
    assert sum(t.bits for t in tokens) == pytest.approx(nats / math.log(2), rel=1e-5)
    for token in tokens:
        assert token.probability == pytest.approx(2 ** -token.bits, rel=1e-6)
        assert len(token.preferred) == 3 and token.preferred[0][1] >= max(token.probability, token.preferred[1][1])


def test_models_compare_by_bits_per_character_best_first(make_model, prose):
    word_tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=1), prose)
    char_tokenizer = CharTokenizer.from_text(prose)
    from textgen.api import TextModel

    models = [("word", TextModel(make_model(word_tokenizer.vocab_size, seed=1), word_tokenizer)),
              ("char", TextModel(make_model(char_tokenizer.vocab_size, seed=2), char_tokenizer))]
    rows = compare(models, TEXT)
    assert [r.bits_per_char for r in rows] == sorted(r.bits_per_char for r in rows)
    for row in rows:
        model = dict(models)[row.name]
        expected = evaluate_text(model.model, model.tokenizer, TEXT)
        assert (row.tokens, row.bits_per_char, row.nats_per_token) == (
            expected.tokens, expected.bits_per_char, expected.loss)
        assert row.bits_per_byte == pytest.approx(row.bits_per_char * len(TEXT) / len(TEXT.encode("utf-8")))
        assert row.tokenizer == row.name and row.parameters == model.model.num_parameters()


def run(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def test_evaluate_compares_checkpoints_and_shows_memory_and_surprise(tmp_path, monkeypatch, capsys, make_checkpoint,
                                                                    prose):
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / "char", prose, "char")
    make_checkpoint(tmp_path / "word", prose, "word")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    code, out, err = run(["evaluate", "char", "word", "--text", "text.txt", "--memory", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert {row["name"] for row in rows} == {"char", "word"}
    assert rows[0]["bits_per_char"] <= rows[1]["bits_per_char"]
    assert [p["reset_every"] for p in rows[0]["memory"]][-1] is None
    single = textgen.load(tmp_path / "char")
    assert next(r for r in rows if r["name"] == "char")["bits_per_char"] == pytest.approx(
        single.evaluate(TEXT).bits_per_char)
    code, out, err = run(["evaluate", "char", "--text", "text.txt", "--show", "--memory", "--gradients"], capsys)
    assert code == 0, err
    assert "surprise in bits" in out and "memory reach" in out and re.search(r"never\s+│?\s*\d\.\d{4}", out)
    first_line = TEXT.split("\n")[0][:30]
    assert f"\n{first_line}" in out  # the coloured text starts with the first token, which nothing predicts
    assert "fading gradients" in out
    code, out, err = run(["evaluate", "char", "--text", "text.txt", "--cells"], capsys)
    assert code == 0 and "cells of char that track the text" in out and "gate saturation" in out, err
    code, out, err = run(["evaluate", "char", "--text", "text.txt", "--gradients", "--json"], capsys)
    fades = json.loads(out)["gradients"]
    assert [f["layer"] for f in fades] == [0] and len(fades[0]["norms"]) == 201  # k = 0 .. 200
    code, out, err = run(["evaluate", "char", "word"], capsys)
    assert code == 2 and "comparing models needs one text for all of them: give --text FILE" in err


def test_gradient_fade_of_a_relu_rnn_with_known_weights_halves_at_each_step(make_model):
    """h_t = relu(0.5 h_(t-1) + 1) whatever the input: every h is positive, so d h_t / d h_(t-1) is
    0.5 I, and the gradient k steps back is exactly 0.5^k times the gradient at the step itself."""
    from textgen.insight import gradient_fade

    model = make_model(20, cell="rnn-relu", layers=1, hidden_size=6, embedding_size=4, seed=5)
    weights = model.layer_weights()[0]
    with torch.no_grad():
        model.embedding.weight.zero_()
        weights["weight_ih"].zero_()
        weights["bias_ih"].fill_(1.0)
        weights["bias_hh"].zero_()
        weights["weight_hh"].copy_(0.5 * torch.eye(6))
    ids = [(7 * i) % 20 for i in range(60)]
    (fade,) = gradient_fade(model, ids, distance=12, positions=4)
    assert len(fade.norms) == 13
    for k, norm in enumerate(fade.norms):
        assert norm == pytest.approx(fade.norms[0] * 0.5 ** k, rel=1e-5)


@pytest.mark.parametrize("cell", CELL_KINDS)
def test_gradient_fade_gives_a_curve_per_layer_for_every_cell(make_model, cell):
    from textgen.insight import gradient_fade

    model = make_model(20, cell=cell, layers=2, hidden_size=8, embedding_size=4, seed=6)
    fades = gradient_fade(model, [(3 * i) % 20 for i in range(40)], distance=10, positions=3)
    assert [f.layer for f in fades] == [0, 1] and all(len(f.norms) == 11 for f in fades)
    assert all(n >= 0 and math.isfinite(n) for f in fades for n in f.norms) and fades[1].norms[0] > 0
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was


def test_memory_reach_on_a_long_text_scores_an_even_sample_of_segments(char_setup, monkeypatch):
    import textgen.insight.memory as memory

    model, _, ids = char_setup
    monkeypatch.setattr(memory, "MAX_PREDICTIONS_PER_POINT", 64)
    points = memory_reach(model, ids, characters=len(TEXT) - 1, longest=8)
    first = points[0]  # k = 1: every 5th of the 299 one-token segments
    assert first.reset_every == 1 and first.predictions == 60
    by_hand = sum(nats_by_hand(model, ids[t:t + 2], 1) for t in range(0, len(ids) - 1, 5))
    assert first.nats_per_token == pytest.approx(by_hand / 60, rel=1e-5)
    assert points[-1].reset_every is None and points[-1].predictions == len(ids) - 1


def test_text_features_by_hand():
    text = 'Say "Hi (there)" 2 him.\n「好。」Ok'
    features = text_features(text, list(range(len(text))))
    at = {name: [int(v) for v in values] for name, values in features.items()}
    quoted = [i for i, v in enumerate(at["inside quotes"]) if v]
    assert quoted == list(range(text.index('"'), text.rindex('"')))  # from the opening mark to before the closing
    assert at["inside brackets"][text.index("t")] == 1 and at["inside brackets"][text.index("2")] == 0
    assert at["position in line"][text.index("\n") + 1] == 1 and at["position in line"][0] == 1
    # an ideograph after a quotation mark starts a word too
    assert [i for i, v in enumerate(at["start of a word"]) if v] == [0, 5, 9, 19, text.index("好"), text.index("O")]
    assert at["upper case"][0] == 1 and at["digit"][text.index("2")] == 1
    assert at["inside 「」 or “”"][text.index("好")] == 1 and at["inside 「」 or “”"][text.index("O")] == 0
    assert at["after a full stop"][text.index("」")] == 1 and at["after a full stop"][text.index("好")] == 0


@pytest.mark.parametrize("cell", [name for name, kind in CELL_KINDS.items() if kind.sigmoid_gates])
def test_cell_report_correlations_and_gate_saturation_match_a_computation_by_hand(make_model, prose, cell):
    tokenizer = CharTokenizer.from_text(prose)
    model = make_model(tokenizer.vocab_size, cell=cell, layers=2, hidden_size=12, embedding_size=6, seed=8)
    text = prose[:400]
    ids = tokenizer.encode(text)
    report = cell_report(model, tokenizer, ids, text)
    assert report.best and report.tokens == list(text)
    features = text_features(text, list(range(len(text))))
    activations = []
    hooks = [layer.register_forward_hook(lambda m, a, out: activations.append(out[0][0].detach())) for layer in model.layers]
    with torch.no_grad():
        model(torch.tensor([ids]))
    for hook in hooks:
        hook.remove()
    for match in report.best:
        unit = activations[match.layer][:, match.unit].double().numpy()
        import numpy as np

        expected = np.corrcoef(unit, np.array(features[match.feature]))[0, 1]
        assert match.correlation == pytest.approx(expected, abs=1e-6)
    assert report.activations == pytest.approx(activations[report.best[0].layer][:, report.best[0].unit].tolist())
    gates = list(CELL_KINDS[cell].sigmoid_gates)
    assert list(report.saturation) == [f"layer {layer} {gate}" for layer in (1, 2) for gate in gates]
    assert all(0 <= low <= 1 and 0 <= high <= 1 and low + high <= 1 for low, high in report.saturation.values())


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_every_view_runs_on_every_tokenizer(tmp_path, monkeypatch, capsys, make_checkpoint, prose, kind):
    monkeypatch.chdir(tmp_path)
    make_checkpoint(tmp_path / kind, prose, kind)
    (tmp_path / "text.txt").write_text(prose[:500], encoding="utf-8")
    code, out, err = run(["evaluate", kind, "--text", "text.txt", "--memory", "--gradients", "--show", "--cells",
                          "--unknown", "replace", "--json"], capsys)
    assert code == 0, err
    figures = json.loads(out)
    tokens = figures["tokens"]
    assert len(figures["surprisal_bits"]) == tokens and all(b >= 0 for b in figures["surprisal_bits"])
    assert figures["memory"][-1]["reset_every"] is None and figures["gradients"][0]["norms"][0] > 0
    assert "best" in figures["cells"] and "saturation" in figures["cells"]
