"""Tests for textgen.sampling: reproducible draws, greedy decoding, the distribution's knobs,
the length rule, seed text checks and the constant cost per generated token."""

from __future__ import annotations

import math

import pytest
import torch

from textgen.config import ModelConfig, SampleConfig, TokenizerConfig
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel
from textgen.sampling import check_sample_config, generate, make_generator, next_token_distribution
from textgen.tokenizers import CharTokenizer, build_tokenizer


def sample(model, tokenizer, prompt: str = "", seed: int | None = 0, **config) -> str:
    generator = make_generator(seed) if seed is not None else None
    return "".join(generate(model, tokenizer, prompt, SampleConfig(**config), generator))


def fit(model, ids: list[int], steps: int = 80) -> None:
    """A few full-batch steps so the model has learnt something of the text (peaked predictions)."""
    data = torch.tensor(ids).view(4, -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        logits, _ = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


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


# --- reproducibility and greedy decoding ---------------------------------------------------


def test_same_seed_gives_the_same_text_and_other_seeds_differ(char_model, char_tokenizer):
    config = dict(length=120, temperature=1.0, top_k=0)
    first = sample(char_model, char_tokenizer, "The keeper", seed=7, **config)
    assert sample(char_model, char_tokenizer, "The keeper", seed=7, **config) == first
    others = {sample(char_model, char_tokenizer, "The keeper", seed=s, **config) for s in (8, 9, 10)}
    assert first not in others and len(others) == 3


def test_top_k_one_is_greedy_decoding_with_the_state_carried(char_model, char_tokenizer):
    prompt, length = "In winter the", 80
    expected = []
    with torch.no_grad():
        logits, state = char_model(torch.tensor([char_tokenizer.encode(prompt)]))
        for _ in range(length):
            token = int(logits[0, -1].argmax())
            expected.append(token)
            logits, state = char_model(torch.tensor([[token]]), state)
    greedy = char_tokenizer.decode(expected)
    for seed in (1, 2):  # nothing is left to chance
        assert sample(char_model, char_tokenizer, prompt, seed=seed, length=length, top_k=1) == greedy
    # the trained model has learnt words of its text, so greedy output is not noise
    assert any(word in greedy for word in (" the ", " and ", " of "))


def test_sampling_without_a_generator_still_respects_the_config(char_model, char_tokenizer):
    text = sample(char_model, char_tokenizer, "The", seed=None, length=40)
    assert len(text) == 40 and char_tokenizer.unknown_symbols(text) == []


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


# --- length, seed text, config -----------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 17, 150])
def test_length_is_counted_in_characters_for_every_tokenizer(make_model, prose, length):
    for config in (TokenizerConfig(kind="char"), TokenizerConfig(kind="word", min_count=1),
                   TokenizerConfig(kind="subword", vocab_size=300)):
        tokenizer = build_tokenizer(config, prose)
        model = make_model(tokenizer.vocab_size, hidden_size=16)
        text = sample(model, tokenizer, "The", seed=3, length=length, temperature=1.5, top_k=0)
        assert len(text) == length, config.kind


def test_pieces_are_yielded_as_they_are_made(char_model, char_tokenizer):
    pieces = list(generate(char_model, char_tokenizer, "The", SampleConfig(length=30), make_generator(0)))
    assert len(pieces) == 30 and all(len(piece) == 1 for piece in pieces)


def test_empty_prompt_starts_at_a_line_break(char_model, char_tokenizer):
    calls = record_inputs(char_model)
    text = sample(char_model, char_tokenizer, "", seed=5, length=60)
    assert len(text) == 60
    assert calls[0].tolist() == [char_tokenizer.encode("\n")]


def test_empty_prompt_without_a_line_break_in_the_vocabulary_starts_at_id_zero(make_model):
    tokenizer = CharTokenizer.from_text("abc cab bca")
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    calls = record_inputs(model)
    text = sample(model, tokenizer, "", seed=5, length=25, top_k=0)
    assert len(text) == 25 and set(text) <= set("abc ")
    assert calls[0].tolist() == [[0]]


def test_unknown_seed_characters_are_named_in_one_line(char_model, char_tokenizer):
    prompt = "Zebra quiz ☕\tend"
    unknown = char_tokenizer.unknown_symbols(prompt)
    assert {"Z", "z", "☕", "\t"} <= set(unknown)
    with pytest.raises(TextgenError) as err:
        sample(char_model, char_tokenizer, prompt)
    message = str(err.value)
    assert "never saw" in message and "\n" not in message
    for symbol in unknown:
        assert repr(symbol) in message


def test_unknown_seed_words_are_named_for_a_word_model(make_model, prose):
    tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=1), prose)
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    with pytest.raises(TextgenError, match="'zeppelin'"):
        sample(model, tokenizer, "The keeper saw a zeppelin")


@pytest.mark.parametrize(
    "change, option",
    [
        ({"temperature": 0.0}, "--temperature"),
        ({"temperature": -1.0}, "--temperature"),
        ({"temperature": float("nan")}, "--temperature"),
        ({"top_k": -1}, "--top-k"),
        ({"length": 0}, "--length"),
        ({"length": -5}, "--length"),
        ({"num_samples": 0}, "--num-samples"),
    ],
)
def test_out_of_range_configs_raise_naming_the_option(char_model, char_tokenizer, change, option):
    config = SampleConfig(**change)
    with pytest.raises(TextgenError) as err:
        check_sample_config(config)
    assert str(err.value).startswith(option)
    with pytest.raises(TextgenError):
        "".join(generate(char_model, char_tokenizer, "The", config, make_generator(0)))


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


# --- cost per token ------------------------------------------------------------------------------


def record_inputs(model) -> list[torch.Tensor]:
    """Wrap model.forward to keep every ids tensor it is called with."""
    calls: list[torch.Tensor] = []
    forward = model.forward

    def recording_forward(ids, state=None):
        calls.append(ids.detach().cpu().clone())
        return forward(ids, state)

    model.forward = recording_forward
    return calls


def test_after_the_prompt_the_model_is_fed_one_token_per_step_with_its_state(make_model, prose):
    tokenizer = CharTokenizer.from_text(prose)
    model = make_model(tokenizer.vocab_size, hidden_size=16)
    calls = record_inputs(model)
    prompt = "When the fog came in"
    text = sample(model, tokenizer, prompt, seed=11, length=200, top_k=0)
    assert calls[0].tolist() == [tokenizer.encode(prompt)]  # the prompt in one pass
    assert [tuple(c.shape) for c in calls[1:]] == [(1, 1)] * 199  # then one token a step, never the text
    # each step feeds the token just drawn
    assert tokenizer.decode(int(c) for c in calls[1:]) == text[:-1]


def test_a_vanishingly_small_temperature_is_greedy_not_an_error():
    logits = torch.tensor([[1.0, 3.0, 2.0, -5.0]])
    probabilities = next_token_distribution(logits, 1e-45, 0)
    assert torch.equal(probabilities, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
