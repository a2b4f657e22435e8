"""Tests for textgen.sampling: the fast step against the model's own forward, reproducible draws
(per sample, whatever the batch), greedy decoding, the distribution's knobs and their order, the
repetition penalty, stop texts, the length rule, unseen seed symbols and the cost per token."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from conftest import fit, generate, next_token_distribution, run_fast_step
from textgen.cli.app import flag_for
from textgen.config import CELLS, ModelConfig, SampleConfig, TokenizerConfig
from textgen.errors import TextgenError
from textgen.model import FastStep, ModuleStep, RNNLanguageModel, make_step
from textgen.model.fast_step import _Linear
from textgen.sampling import (
    SampleText, candidates, choose_tokens, draw, penalize_presence, penalize_repeats, prompt_ids, sample_pieces,
    sample_stream,
)
from textgen.tokenizers import CharTokenizer, build_tokenizer

cells = pytest.mark.parametrize("cell", CELLS)


def sample(model, tokenizer, prompt: str = "", seed: int | None = 0, step=None, **config) -> str:
    return "".join(generate(model, tokenizer, prompt, SampleConfig(seed=seed, **config), step))


def samples(model, tokenizer, prompt: str = "", seed: int = 0, step=None, **config) -> list[str]:
    config = SampleConfig(seed=seed, **config)
    texts = [""] * config.num_samples
    for piece in sample_pieces(model, tokenizer, prompt, config, step):
        texts[piece.index] += piece.text
    return texts


@pytest.fixture(scope="module")
def char_tokenizer(prose) -> CharTokenizer:
    return CharTokenizer.from_text(prose)


@pytest.fixture(scope="module")
def char_model(char_tokenizer, prose):
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=char_tokenizer.vocab_size, layers=1,
                                         hidden_size=48, embedding_size=16))
    ids = char_tokenizer.encode(prose)
    fit(model, ids[: len(ids) // 4 * 4])
    return model


@pytest.fixture(scope="module")
def word_setup(prose):
    tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=1), prose)
    torch.manual_seed(1)
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden_size=32,
                                         embedding_size=16)).eval()
    return model, tokenizer


# --- the fast step is the model ----------------------------------------------------------------


@cells
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("skip_connections", [True, False])
def test_fast_step_gives_the_logits_of_the_models_own_forward(make_model, cell, layers, skip_connections):
    model = make_model(50, cell=cell, layers=layers, hidden_size=40, embedding_size=24, seed=layers,
                       skip_connections=skip_connections)
    ids = torch.randint(0, 50, (3, 25), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = model(ids)  # nn.LSTM / nn.GRU / nn.RNN over the whole sequence
    torch.testing.assert_close(run_fast_step(model, ids), expected, rtol=1e-5, atol=1e-5)


@cells
@pytest.mark.parametrize("path, skip_connections", [
    *((path, skip) for path in ("no input table", "addmm only", "rows for every layer") for skip in (True, False)),
    ("tied weights", False),  # tied weights need an output layer that reads the top layer alone
])
def test_every_arrangement_of_the_fast_step_gives_the_same_logits(make_model, monkeypatch, cell, path, skip_connections):
    if path == "no input table":
        monkeypatch.setattr("textgen.model.fast_step._MAX_TABLE_ELEMENTS", 0)  # a big vocabulary's way
    if path == "addmm only":
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        monkeypatch.setattr(_Linear, "SMALL", 0)
    if path == "rows for every layer":
        monkeypatch.setattr(_Linear, "SMALL", 10**9)
    tied = path == "tied weights"
    model = make_model(40, cell=cell, layers=2, hidden_size=32, embedding_size=32 if tied else 16, tie_weights=tied,
                       skip_connections=skip_connections)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(ids)
    torch.testing.assert_close(run_fast_step(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_large_layers_use_packed_weights_and_small_ones_per_row_products(make_model):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    model = make_model(30, hidden_size=256, embedding_size=16)  # 1024 x 256 recurrent weights
    step = FastStep(model)
    assert step.layers[0].hidden.mode == "packed" and step.decoder.mode == "rows"
    ids = torch.randint(0, 30, (4, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = model(ids)
    torch.testing.assert_close(run_fast_step(model, ids, step), expected, rtol=1e-5, atol=1e-5)


def test_each_rows_result_does_not_depend_on_the_batch_size(make_model):
    """What lets sample 1 be the same whether 1 or 16 samples are made: no float drift by batch size."""
    model = make_model(30, hidden_size=256, embedding_size=16)
    ids = torch.randint(0, 30, (16, 8), generator=torch.Generator().manual_seed(3))
    alone = run_fast_step(model, ids[:1])
    for batch in (2, 4, 16):
        assert torch.equal(run_fast_step(model, ids[:batch])[:1], alone)


@cells
def test_make_step_picks_the_fast_step_for_every_cell(make_model, cell):
    assert make_step(make_model(20, cell=cell, layers=2)).kind == "fast"


def test_a_model_the_fast_step_does_not_reproduce_is_sampled_through_its_forward(make_model, char_tokenizer):
    model = make_model(char_tokenizer.vocab_size, hidden_size=16)
    plain = sample(model, char_tokenizer, "The", seed=4, length=60, top_k=0, temperature=1.0)
    forward = model.forward
    model.forward = lambda ids, state=None: (lambda out: (out[0] * 2.0, out[1]))(forward(ids, state))
    step = make_step(model)  # the check sees logits twice those of the weights' own step
    assert step.kind == "module"
    hotter = sample(model, char_tokenizer, "The", seed=4, length=60, top_k=0, temperature=1.0, step=step)
    assert len(hotter) == 60 and hotter != plain
    # and its distribution is the patched forward's: temperature 2 undoes the doubling
    assert sample(model, char_tokenizer, "The", seed=4, length=60, top_k=0, temperature=2.0, step=step) == plain


@cells
def test_module_and_fast_steps_write_the_same_text(make_model, char_tokenizer, cell):
    model = make_model(char_tokenizer.vocab_size, cell=cell, layers=2, hidden_size=24)
    config = dict(length=80, temperature=1.0, top_k=0, num_samples=3)
    assert samples(model, char_tokenizer, "The", 5, step=ModuleStep(model), **config) == \
        samples(model, char_tokenizer, "The", 5, step=make_step(model), **config)


# --- reproducibility, samples in a batch, greedy decoding ---------------------------------------


def test_same_seed_gives_the_same_text_and_other_seeds_differ(char_model, char_tokenizer):
    config = dict(length=120, temperature=1.0, top_k=0)
    first = sample(char_model, char_tokenizer, "The keeper", seed=7, **config)
    assert sample(char_model, char_tokenizer, "The keeper", seed=7, **config) == first
    others = {sample(char_model, char_tokenizer, "The keeper", seed=s, **config) for s in (8, 9, 10)}
    assert first not in others and len(others) == 3


def test_the_first_sample_is_the_same_whether_one_or_four_are_made(char_model, char_tokenizer):
    for seed in (1, 2, 3):
        alone = sample(char_model, char_tokenizer, "The", seed=seed, length=150, temperature=1.0)
        four = samples(char_model, char_tokenizer, "The", seed, length=150, temperature=1.0, num_samples=4)
        assert four[0] == alone
        assert len(set(four)) == 4  # each its own draws


def test_each_sample_is_the_same_in_a_batch_of_any_size(char_model, char_tokenizer):
    config = dict(length=100, temperature=1.2, top_k=20)
    six = samples(char_model, char_tokenizer, "In", 11, num_samples=6, **config)
    assert samples(char_model, char_tokenizer, "In", 11, num_samples=3, **config) == six[:3]


def test_a_sample_that_stops_early_changes_no_other(char_model, char_tokenizer):
    config = dict(length=150, temperature=1.0, num_samples=5)
    free = samples(char_model, char_tokenizer, "The", 21, **config)
    stopped = samples(char_model, char_tokenizer, "The", 21, stop=("e ",), **config)
    for whole, cut in zip(free, stopped):
        assert cut == (whole[: whole.index("e ")] if "e " in whole else whole)
    assert any("e " in whole for whole in free) and any(len(cut) < 20 for cut in stopped)


def test_sampling_without_a_seed_still_respects_the_config(char_model, char_tokenizer):
    text = sample(char_model, char_tokenizer, "The", seed=None, length=40)
    assert len(text) == 40 and char_tokenizer.unknown_symbols(text) == []
    assert sample(char_model, char_tokenizer, "The", seed=None, length=200, top_k=0, temperature=1.5) != \
        sample(char_model, char_tokenizer, "The", seed=None, length=200, top_k=0, temperature=1.5)


def greedy_reference(model, tokenizer, prompt: str, length: int) -> str:
    expected = []
    with torch.no_grad():
        logits, state = model(torch.tensor([tokenizer.encode(prompt)]))
        for _ in range(length):
            token = int(logits[0, -1].argmax())
            expected.append(token)
            logits, state = model(torch.tensor([[token]]), state)
    return tokenizer.decode(expected)


def test_greedy_and_top_k_one_are_the_argmax_with_the_state_carried(char_model, char_tokenizer):
    prompt, length = "In winter the", 80
    greedy = greedy_reference(char_model, char_tokenizer, prompt, length)
    assert sample(char_model, char_tokenizer, prompt, length=length, greedy=True) == greedy
    for seed in (1, 2):  # nothing is left to chance
        assert sample(char_model, char_tokenizer, prompt, seed=seed, length=length, top_k=1) == greedy
        assert sample(char_model, char_tokenizer, prompt, seed=seed, length=length, top_k=1, temperature=3.0) == greedy
    # the trained model has learnt words of its text, so greedy output is not noise
    assert any(word in greedy for word in (" the ", " and ", " of "))


def test_greedy_ignores_temperature_top_k_and_top_p(char_model, char_tokenizer):
    texts = {sample(char_model, char_tokenizer, "The", seed=s, length=50, greedy=True, temperature=t, top_k=k, top_p=p)
             for s, t, k, p in [(1, 0.5, 0, 1.0), (2, 5.0, 40, 0.3), (3, 1.0, 3, 0.9)]}
    assert len(texts) == 1


def test_the_sampler_draws_from_exactly_the_models_distribution(char_model, char_tokenizer):
    """A reference sampler written with the model's forward, softmax and the same random numbers."""
    prompt, length, temperature, seed = "The lamp", 120, 0.9, 5
    stream = sample_stream(seed, 0)
    ids = []
    with torch.no_grad():
        logits, state = char_model(torch.tensor([char_tokenizer.encode(prompt)]))
        for _ in range(length):
            probabilities = torch.softmax(logits[0, -1].double() / temperature, dim=-1)
            cumulative = probabilities.cumsum(0)
            u = stream.random()
            token = int((cumulative <= u * float(cumulative[-1])).sum())
            ids.append(token)
            logits, state = char_model(torch.tensor([[token]]), state)
    expected = char_tokenizer.decode(ids)
    assert sample(char_model, char_tokenizer, prompt, seed, length=length, temperature=temperature, top_k=0) == expected
    # top-p 1.0 filters nothing: the same text
    assert sample(char_model, char_tokenizer, prompt, seed, length=length, temperature=temperature, top_k=0,
                  top_p=1.0) == expected


# --- the distribution ------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest_renormalised():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9, -0.2, 3.1, 0.0]])
    probabilities = next_token_distribution(logits, temperature=1.0, top_k=3)
    assert probabilities.shape == logits.shape
    assert torch.nonzero(probabilities[0]).flatten().tolist() == [1, 3, 6]
    kept = torch.softmax(torch.tensor([2.0, 1.5, 3.1]), dim=0)
    torch.testing.assert_close(probabilities[0, [1, 3, 6]], kept)
    assert probabilities.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("top_k", [0, 8, 50])
def test_top_k_off_or_at_least_the_vocabulary_keeps_everything(top_k):
    logits = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    probabilities = next_token_distribution(logits, temperature=1.0, top_k=top_k)
    torch.testing.assert_close(probabilities, torch.softmax(logits, dim=-1))


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_applies_to_each_row_of_a_batch(k):
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(k))
    probabilities = next_token_distribution(logits, temperature=0.7, top_k=k)
    assert (probabilities > 0).sum(dim=-1).tolist() == [k, k, k]
    for row in range(3):
        kept = set(torch.nonzero(probabilities[row]).flatten().tolist())
        assert kept == set(torch.topk(logits[row], k).indices.tolist())


def test_temperature_scales_the_logits_sharpening_below_one_and_flattening_above():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])

    def entropy(p: torch.Tensor) -> float:
        return float(-(p * p.log()).sum())

    by_temperature = {t: next_token_distribution(logits, t, top_k=0) for t in (0.25, 0.5, 1.0, 2.0, 100.0)}
    for t, p in by_temperature.items():
        torch.testing.assert_close(p, torch.softmax(logits / t, dim=-1))
    entropies = [entropy(by_temperature[t]) for t in sorted(by_temperature)]
    assert entropies == sorted(entropies)  # hotter is flatter
    assert by_temperature[0.25][0] > 0.97 > by_temperature[1.0][0]  # cold: nearly always the top token
    assert by_temperature[100.0].tolist() == pytest.approx([0.25] * 4, abs=0.01)  # hot: nearly uniform
    assert entropy(by_temperature[1.0]) < math.log(4)


def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_that_reaches_p():
    probabilities = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probabilities.log()
    for top_p, kept in [(0.5, [1]), (0.79, [1, 3]), (0.8, [1, 3]), (0.81, [1, 2, 3]), (0.96, [0, 1, 2, 3]),
                        (1e-9, [1])]:
        result = next_token_distribution(logits, 1.0, 0, top_p)[0]
        assert torch.nonzero(result).flatten().tolist() == kept, top_p
        torch.testing.assert_close(result[kept], probabilities[0, kept] / probabilities[0, kept].sum())


def test_top_p_one_filters_nothing_even_for_a_long_tail_of_tiny_probabilities():
    logits = torch.cat([torch.tensor([30.0]), torch.linspace(-20, 0, 5000)]).view(1, -1)
    unfiltered = torch.softmax(logits, dim=-1)
    assert torch.equal(next_token_distribution(logits, 1.0, 0, 1.0), unfiltered)
    assert (next_token_distribution(logits, 1.0, 0, 1.0) > 0).all()
    assert (next_token_distribution(logits, 1.0, 0, 0.999999) > 0).sum() < 5001  # just below 1 cuts the tail


def test_temperature_then_top_k_then_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.5, 2.0, 1.0, 0.0]])
    temperature, top_k, top_p = 2.0, 4, 0.75
    reference = torch.softmax(logits[0] / temperature, dim=0)[:top_k]
    reference = reference / reference.sum()  # top-k renormalised: 0.36, 0.22, 0.17, 0.13 after rounding
    keep = [i for i in range(top_k) if reference[:i].sum() < top_p]
    expected = torch.zeros(6)
    expected[keep] = reference[keep] / reference[keep].sum()
    torch.testing.assert_close(next_token_distribution(logits, temperature, top_k, top_p)[0], expected)
    assert keep == [0, 1, 2]  # at temperature 1 the same top-p keeps two tokens:
    assert (next_token_distribution(logits, 1.0, top_k, top_p) > 0).sum() == 2


def test_candidates_are_the_likeliest_first_when_filtered():
    logits = torch.tensor([[0.1, 2.0, -3.0, 1.0]])
    probabilities, ids = candidates(logits, 1.0, 3)
    assert ids.tolist() == [[1, 3, 0]]
    torch.testing.assert_close(probabilities, torch.softmax(torch.tensor([[2.0, 1.0, 0.1]]), dim=-1))
    probabilities, ids = candidates(logits, 1.0, 0)
    assert ids is None and probabilities.shape == (1, 4)


def test_draw_inverts_the_cumulative_distribution_and_never_picks_a_zero():
    probabilities = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]] * 6)
    uniforms = [0.0, 0.2499, 0.2501, 0.9, 1.0 - 2**-53, 0.5]
    for python_up_to in (0, 1000):  # drawn by torch, and in Python
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("textgen.sampling.shaping._PYTHON_DRAW_MAX_CANDIDATES", python_up_to)
            assert draw(probabilities, uniforms) == [1, 1, 3, 3, 3, 3]
            assert draw(probabilities[:1], [1.0 - 2**-53]) == [3]


def test_the_python_and_torch_draws_agree_to_the_last_bit(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 300, generator=generator) * 3
    logits[:, ::7] = float("-inf")  # tokens cut by top-k or top-p
    probabilities = torch.softmax(logits, dim=-1)
    uniforms = torch.rand(64, generator=generator, dtype=torch.float64).tolist()
    in_python = [draw(row.view(1, -1), [u])[0] for row, u in zip(probabilities, uniforms)]
    monkeypatch.setattr("textgen.sampling.shaping._PYTHON_DRAW_MAX_CANDIDATES", 0)
    assert draw(probabilities, uniforms) == in_python
    # at the boundaries themselves: u * total exactly on a cumulative sum
    cumulative = list(itertools.accumulate(probabilities[0].tolist()))
    edges = [c / cumulative[-1] for c in cumulative[:-1:5]]
    assert draw(probabilities[:1].repeat(len(edges), 1), edges) == [draw(probabilities[:1], [u])[0] for u in edges]


def test_the_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([[3.0, 2.0, -1.0, 1.0, -2.0]])
    seen = torch.tensor([[True, False, True, False, False]])
    torch.testing.assert_close(penalize_repeats(logits, seen, 2.0), torch.tensor([[1.5, 2.0, -2.0, 1.0, -2.0]]))
    greedy = SampleConfig(greedy=True, repetition_penalty=2.0)
    assert choose_tokens(logits, greedy, [random.Random(0)], seen) == [1]
    assert choose_tokens(logits, SampleConfig(greedy=True), [random.Random(0)]) == [0]


def test_a_repetition_penalty_breaks_a_greedy_loop(word_setup):
    model, tokenizer = word_setup
    plain = tokenizer.encode(sample(model, tokenizer, "The keeper", length=300, greedy=True))
    penalized = tokenizer.encode(sample(model, tokenizer, "The keeper", length=300, greedy=True,
                                        repetition_penalty=1.5))
    assert len(set(penalized)) > 2 * len(set(plain))


# --- length, stop texts ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 17, 150])
def test_length_is_counted_in_characters_for_every_tokenizer(make_model, prose, length):
    for config in (TokenizerConfig(kind="char"), TokenizerConfig(kind="word", min_count=1),
                   TokenizerConfig(kind="subword", vocab_size=300)):
        tokenizer = build_tokenizer(config, prose)
        model = make_model(tokenizer.vocab_size, hidden_size=16)
        texts = samples(model, tokenizer, "The", 3, length=length, temperature=1.5, top_k=0, num_samples=3)
        assert [len(text) for text in texts] == [length] * 3, config.kind


def test_pieces_are_yielded_as_they_are_made(char_model, char_tokenizer):
    pieces = list(generate(char_model, char_tokenizer, "The", SampleConfig(length=30, seed=0)))
    assert len(pieces) == 30 and all(len(piece) == 1 for piece in pieces)


def test_each_sample_has_one_finished_piece_its_last(char_model, char_tokenizer):
    config = SampleConfig(length=60, num_samples=4, seed=2, stop=("e",))
    pieces = list(sample_pieces(char_model, char_tokenizer, "The", config))
    for index in range(4):
        own = [p for p in pieces if p.index == index]
        assert [p.finished for p in own] == [False] * (len(own) - 1) + [True]


@pytest.mark.parametrize("stop", ["e", "he", "the ", "\n\n", "ing"])
def test_a_sample_ends_just_before_the_first_stop_text(char_model, char_tokenizer, stop):
    for seed in range(4):
        whole = sample(char_model, char_tokenizer, "The", seed, length=300, temperature=1.0)
        cut = sample(char_model, char_tokenizer, "The", seed, length=300, temperature=1.0, stop=(stop,))
        assert cut == (whole[: whole.index(stop)] if stop in whole else whole)


def test_the_earliest_of_several_stop_texts_wins_and_a_stop_text_in_the_prompt_is_ignored(char_model, char_tokenizer):
    whole = sample(char_model, char_tokenizer, "the the", 9, length=300, temperature=1.0)
    cut = sample(char_model, char_tokenizer, "the the", 9, length=300, temperature=1.0, stop=("ing", "e", "the"))
    assert cut == whole[: min(whole.index(s) for s in ("ing", "e", "the") if s in whole)]


def test_a_text_without_a_length_holds_a_possible_stop_until_told_to_finish():
    tokenizer = CharTokenizer.from_text("abc")
    text = SampleText(tokenizer, None, ["cab"])
    sent = [text.feed(token) for token in tokenizer.encode("abca")]
    assert sent == ["a", "b", "", ""]  # "ca" could still become "cab"
    assert (text.finish(), text.finished, text.stopped) == ("ca", True, False)
    assert text.finish() == ""


def test_a_text_that_meets_its_stop_says_it_stopped():
    tokenizer = CharTokenizer.from_text("abc")
    text = SampleText(tokenizer, None, ["ab"])
    assert "".join(text.feed(token) for token in tokenizer.encode("cab")) == "c"
    assert (text.finished, text.stopped) == (True, True)


def test_presence_and_frequency_penalties_lower_drawn_tokens_once_and_per_draw():
    logits = torch.zeros(1, 3)
    counts = torch.tensor([[0.0, 1.0, 3.0]])
    assert penalize_presence(logits, counts, 0.5, 0.25).tolist() == [[0.0, -0.75, -1.25]]


def test_a_stop_text_past_the_length_does_not_count(char_model, char_tokenizer):
    whole = sample(char_model, char_tokenizer, "The", 3, length=400, temperature=1.0)
    stop = whole[38:41]  # begins inside the first 40 characters, ends after them
    assert stop not in whole[:40]
    assert sample(char_model, char_tokenizer, "The", 3, length=40, temperature=1.0, stop=(stop,)) == whole[:40]


def test_streamed_pieces_hold_back_a_possible_stop_text_and_add_up_to_the_sample(char_model, char_tokenizer):
    config = SampleConfig(length=300, seed=4, temperature=1.0, stop=("the k", "\n\n"))
    pieces = list(generate(char_model, char_tokenizer, "The", config))
    text = "".join(pieces)
    whole = sample(char_model, char_tokenizer, "The", 4, length=300, temperature=1.0)
    cuts = [whole.index(s) for s in config.stop if s in whole]
    assert text == whole[: min(cuts)] if cuts else text == whole
    assert all(pieces)  # no empty pieces reach a reader


def test_a_word_model_stops_inside_a_token(word_setup):
    model, tokenizer = word_setup
    whole = sample(model, tokenizer, "The", 5, length=400, temperature=1.0, top_k=0)
    stop = next(word[1:3] for word in whole.split() if len(word) > 3)
    cut = sample(model, tokenizer, "The", 5, length=400, temperature=1.0, top_k=0, stop=(stop,))
    assert cut == whole[: whole.index(stop)]


# --- seed text ---------------------------------------------------------------------------------


def record_inputs(model) -> list[torch.Tensor]:
    """Wrap model.forward to keep every ids tensor it is called with."""
    calls: list[torch.Tensor] = []
    forward = model.forward

    def recording_forward(ids, state=None):
        calls.append(ids.detach().cpu().clone())
        return forward(ids, state)

    model.forward = recording_forward
    return calls


def test_empty_prompt_starts_at_a_line_break(char_model, char_tokenizer):
    step = make_step(char_model)
    calls = record_inputs(char_model)
    try:
        text = sample(char_model, char_tokenizer, "", seed=5, length=60, step=step)
    finally:
        del char_model.forward
    assert len(text) == 60
    assert calls[0].tolist() == [char_tokenizer.encode("\n")]


def test_empty_prompt_without_a_line_break_in_the_vocabulary_starts_at_id_zero(make_model):
    tokenizer = CharTokenizer.from_text("abc cab bca")
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    step = make_step(model)
    calls = record_inputs(model)
    text = sample(model, tokenizer, "", seed=5, length=25, top_k=0, step=step)
    assert len(text) == 25 and set(text) <= set("abc ")
    assert calls[0].tolist() == [[0]]


def test_unknown_seed_characters_are_named_in_one_line(char_model, char_tokenizer):
    prompt = "Zebra quiz ☕\tend"
    unknown = char_tokenizer.unknown_symbols(prompt)
    assert {"Z", "z", "☕", "\t"} <= set(unknown)
    with pytest.raises(TextgenError) as err:
        sample(char_model, char_tokenizer, prompt)
    message = str(err.value)
    assert "never saw" in message and "\n" not in message and "(unknown skip or unknown replace" in message
    assert "(--unknown skip or --unknown replace" in err.value.worded(flag_for)
    for symbol in unknown:
        assert repr(symbol) in message


def test_unknown_seed_words_are_named_for_a_word_model(word_setup):
    model, tokenizer = word_setup
    with pytest.raises(TextgenError, match="'zeppelin'"):
        sample(model, tokenizer, "The keeper saw a zeppelin")


def test_unknown_characters_are_skipped_or_replaced_by_a_plain_form_the_model_knows(char_tokenizer):
    prompt = "The café” Yes…\t"
    assert char_tokenizer.unknown_symbols(prompt) == ["é", "”", "Y", "…", "\t"]
    assert char_tokenizer.decode(prompt_ids(char_tokenizer, prompt, "skip")) == "The caf es"
    # é -> e, ” -> ", Y -> y, … -> ..., and a tab, with no plain form the model knows, -> a space
    assert char_tokenizer.decode(prompt_ids(char_tokenizer, prompt, "replace")) == 'The cafe" yes... '


def test_unknown_words_are_skipped_or_become_unk(word_setup):
    model, tokenizer = word_setup
    prompt = "The keeper rang a zeppelin"
    known = tokenizer.encode("The keeper rang a ")
    assert tokenizer.unknown_symbols(prompt) == ["zeppelin"]
    assert prompt_ids(tokenizer, prompt, "skip") == known
    assert prompt_ids(tokenizer, prompt, "replace") == known + [tokenizer.unk_id]
    text = sample(model, tokenizer, prompt, 3, length=80, unknown="replace")
    assert len(text) == 80 and "<unk>" not in text


def test_a_skipped_prompt_continues_like_the_prompt_without_those_symbols(char_model, char_tokenizer):
    assert sample(char_model, char_tokenizer, "The Zebra", 6, length=50, unknown="skip") == \
        sample(char_model, char_tokenizer, "The ebra", 6, length=50)


def test_word_model_never_samples_unk_even_when_it_is_the_likeliest(make_model, prose):
    tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=2), prose)
    assert tokenizer.unknown_symbols(prose)  # rare words really are <unk> here
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    with torch.no_grad():
        model.decoder.bias[tokenizer.unk_id] = 10.0  # unbanned, <unk> would be nearly every token
    for seed in range(3):
        text = sample(model, tokenizer, "", seed=seed, length=300, temperature=1.0, top_k=0)
        assert len(text) == 300 and "<unk>" not in text
    assert "<unk>" not in sample(model, tokenizer, "In the", length=100, top_k=1)
    assert "<unk>" not in sample(model, tokenizer, "In the", length=100, greedy=True, repetition_penalty=1.3)


# --- config ------------------------------------------------------------------------------------


def test_one_stop_string_is_one_stop_text_not_its_characters():
    assert SampleConfig(stop="\n\n").stop == ("\n\n",)
    assert SampleConfig(stop=["a", "bc"]).stop == ("a", "bc")


# --- cost per token ------------------------------------------------------------------------------


class RecordingStep:
    """A step that keeps the tokens of every call."""

    def __init__(self, step) -> None:
        self.step, self.kind, self.calls = step, step.kind, []

    def from_model_state(self, state, batch):
        return self.step.from_model_state(state, batch)

    def select(self, state, rows):
        return self.step.select(state, rows)

    def __call__(self, tokens, state):
        self.calls.append(tokens.tolist())
        return self.step(tokens, state)


def test_after_the_prompt_each_step_feeds_one_token_per_sample_with_the_state(make_model, prose):
    tokenizer = CharTokenizer.from_text(prose)
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    step = RecordingStep(make_step(model))
    calls = record_inputs(model)
    prompt = "When the fog came in"
    text = sample(model, tokenizer, prompt, seed=11, length=200, top_k=0, step=step)
    assert [c.tolist() for c in calls] == [[tokenizer.encode(prompt)]]  # the prompt in one pass, never again
    assert len(step.calls) == 199 and all(len(tokens) == 1 for tokens in step.calls)
    assert tokenizer.decode(t for (t,) in step.calls) == text[:-1]  # each step feeds the token just drawn


def test_n_samples_are_one_batch_and_finished_samples_leave_it(char_model, char_tokenizer):
    step = RecordingStep(make_step(char_model))
    texts = samples(char_model, char_tokenizer, "The", 8, step=step, length=100, num_samples=4, stop=("e",),
                    temperature=1.0)
    sizes = [len(tokens) for tokens in step.calls]
    assert sizes[0] == 4 and sizes == sorted(sizes, reverse=True)  # one call per step for all, shrinking
    # as many steps as the longest sample needs: its text and the stop text, less the token priming gave
    assert len(step.calls) == max(len(t) for t in texts) + len("e") - 1
    assert min(sizes) < 4


def test_no_grad_or_onednn_setting_leaks_into_the_callers_code_between_pieces(char_model, char_tokenizer):
    onednn = torch.backends.mkldnn.enabled
    pieces = generate(char_model, char_tokenizer, "The", SampleConfig(length=20, seed=1))
    next(pieces)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert torch.backends.mkldnn.enabled == onednn
    assert len("".join(pieces)) == 19


def test_a_vanishingly_small_temperature_is_greedy_not_an_error():
    logits = torch.tensor([[1.0, 3.0, 2.0, -5.0]])
    probabilities = next_token_distribution(logits, 1e-45, 0)
    assert torch.equal(probabilities, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(next_token_distribution(logits, 1e-45, 2, 0.5), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
