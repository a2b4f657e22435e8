"""Tests for textgen.evaluation: the summed loss checked against a token-by-token loop by hand,
and the figures derived from it (perplexity, bits per character)."""

from __future__ import annotations

import math

import pytest
import torch

from textgen.cli.app import flag_for
from textgen.config import TokenizerConfig
from textgen.errors import TextgenError
from textgen.evaluation import evaluate_text, summarise, total_loss
from textgen.tokenizers import CharTokenizer, build_tokenizer

SENTENCE = "The keeper counted the stairs, one hundred and twelve of them, every night."


def loss_by_hand(model, ids: list[int], rows: int) -> float:
    """Sum of -log p(next token), one token at a time: the ids cut into `rows` contiguous
    segments of ceil(count / rows) predictions, each starting from the zero state and
    carrying its state to the end of its segment."""
    count = len(ids) - 1
    length = math.ceil(count / max(1, min(rows, count)))
    total = 0.0
    with torch.no_grad():
        for start in range(0, count, length):
            state = None
            for t in range(start, min(start + length, count)):
                logits, state = model(torch.tensor([[ids[t]]]), state)
                total -= torch.log_softmax(logits[0, -1].double(), dim=-1)[ids[t + 1]].item()
    return total


@pytest.fixture(scope="module")
def char_tokenizer(prose) -> CharTokenizer:
    return CharTokenizer.from_text(prose)


@pytest.fixture
def char_model(make_model, char_tokenizer):
    return make_model(char_tokenizer.vocab_size, cell="gru", layers=2, hidden_size=24, seed=3)


@pytest.mark.parametrize(
    "rows, window",
    [
        (1, 256),  # one stream, one window: the plain sequential loss
        (1, 7),  # one stream, windows that do not divide the length
        (3, 5),  # count 74 -> segments of 25, 25, 24; windows of 5 leave a short last one
        (4, 1000),  # window longer than every segment
        (6, 4),  # count 74 -> segments of 13: the last row is shorter and padded
        (74, 3),  # one prediction per row
        (500, 16),  # more rows than predictions: clamped to one per row
    ],
)
def test_total_loss_equals_the_token_by_token_sum(char_model, char_tokenizer, rows, window):
    ids = char_tokenizer.encode(SENTENCE)
    total, count = total_loss(char_model, torch.tensor(ids), rows=rows, window=window)
    assert count == len(SENTENCE) - 1
    assert total == pytest.approx(loss_by_hand(char_model, ids, rows), rel=1e-5)


def test_total_loss_does_not_depend_on_the_window(char_model, char_tokenizer, prose):
    ids = torch.tensor(char_tokenizer.encode(prose[:500]))
    totals = [total_loss(char_model, ids, rows=5, window=w)[0] for w in (1, 13, 99, 100, 4096)]
    assert totals == pytest.approx([totals[0]] * len(totals), rel=1e-5)


def test_one_row_is_the_loss_of_one_forward_pass_over_the_whole_text(char_model, char_tokenizer, prose):
    ids = torch.tensor(char_tokenizer.encode(prose[:300]))
    with torch.no_grad():
        logits, _ = char_model(ids[None, :-1])
    expected = torch.nn.functional.cross_entropy(logits[0].double(), ids[1:], reduction="sum").item()
    assert total_loss(char_model, ids, rows=1, window=64)[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("rows", [1, 4, 200])
def test_with_context_id_every_token_is_scored(char_model, char_tokenizer, rows):
    ids = char_tokenizer.encode(SENTENCE)
    context_id = char_tokenizer.encode(".")[0]
    total, count = total_loss(char_model, torch.tensor(ids), context_id=context_id, rows=rows, window=10)
    assert count == len(ids)
    assert total == pytest.approx(loss_by_hand(char_model, [context_id, *ids], rows), rel=1e-5)


def test_total_loss_of_fewer_than_two_tokens_is_zero_of_zero(char_model, char_tokenizer):
    one = torch.tensor(char_tokenizer.encode("T"))
    assert total_loss(char_model, one) == (0.0, 0)
    assert total_loss(char_model, one[:0]) == (0.0, 0)
    total, count = total_loss(char_model, one, context_id=one.item())
    assert count == 1 and total == pytest.approx(loss_by_hand(char_model, [one.item()] * 2, 1), rel=1e-5)


def test_total_loss_leaves_the_training_mode_as_it_was(char_model, char_tokenizer):
    ids = torch.tensor(char_tokenizer.encode(SENTENCE))
    char_model.train()
    total_loss(char_model, ids)
    assert char_model.training
    char_model.eval()
    total_loss(char_model, ids)
    assert not char_model.training


def test_char_text_figures_follow_from_the_summed_loss(char_model, char_tokenizer):
    result = evaluate_text(char_model, char_tokenizer, SENTENCE)
    nats = loss_by_hand(char_model, char_tokenizer.encode(SENTENCE), rows=32)
    assert result.tokens == len(SENTENCE) - 1  # the first character has nothing before it
    assert result.characters == len(SENTENCE) - 1
    assert result.loss == pytest.approx(nats / result.tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-9)
    assert result.bits_per_char == pytest.approx(nats / math.log(2) / result.characters, rel=1e-5)
    # an untrained model is close to uniform over the vocabulary
    assert result.loss == pytest.approx(math.log(char_tokenizer.vocab_size), rel=0.1)


def test_char_text_with_context_scores_every_character(char_model, char_tokenizer, prose):
    result = evaluate_text(char_model, char_tokenizer, SENTENCE, context="the end of a paragraph.\n")
    ids = [char_tokenizer.encode("\n")[0], *char_tokenizer.encode(SENTENCE)]
    nats = loss_by_hand(char_model, ids, rows=32)
    assert result.tokens == result.characters == len(SENTENCE)
    assert result.loss == pytest.approx(nats / len(SENTENCE), rel=1e-5)
    assert result.bits_per_char == pytest.approx(nats / math.log(2) / len(SENTENCE), rel=1e-5)


def test_word_model_bits_per_char_divides_by_characters_not_tokens(make_model, prose):
    tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=1), prose)
    model = make_model(tokenizer.vocab_size, cell="lstm", hidden_size=16, seed=1)
    text = "The keeper climbed the stairs and lit the lamp above the water."
    ids = tokenizer.encode(text)
    assert tokenizer.unknown_symbols(text) == [] and len(ids) < len(text) / 2
    result = evaluate_text(model, tokenizer, text)
    nats = loss_by_hand(model, ids, rows=32)
    first_word = tokenizer.decode(ids[:1])
    assert first_word == "The"
    assert result.tokens == len(ids) - 1
    assert result.characters == len(text) - len("The")
    assert result.loss == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
    assert result.bits_per_char == pytest.approx(nats / math.log(2) / (len(text) - 3), rel=1e-5)
    # per token the word model is surprised more than per character
    assert result.bits_per_char < result.loss / math.log(2)

    with_context = evaluate_text(model, tokenizer, text, context="He came home.\n")
    assert with_context.tokens == len(ids) and with_context.characters == len(text)
    nats = loss_by_hand(model, [tokenizer.encode("\n")[0], *ids], rows=32)
    assert with_context.bits_per_char == pytest.approx(nats / math.log(2) / len(text), rel=1e-5)


def test_empty_text_gives_nan_figures_not_an_error(char_model, char_tokenizer):
    result = evaluate_text(char_model, char_tokenizer, "")
    assert (result.tokens, result.characters) == (0, 0)
    assert math.isnan(result.loss) and math.isnan(result.perplexity) and math.isnan(result.bits_per_char)


def test_summarise_figures_by_hand():
    result = summarise(total_nats=20.0, tokens=10, characters=40)
    assert result.loss == 2.0
    assert result.perplexity == pytest.approx(math.exp(2.0))
    assert result.bits_per_char == pytest.approx(20.0 / math.log(2) / 40)
    assert result.to_json() == {
        "loss": 2.0, "perplexity": result.perplexity, "bits_per_char": result.bits_per_char,
        "tokens": 10, "characters": 40, "unseen_symbols": 0, "unseen_handling": "none",
    }
    # a hopeless model's perplexity saturates instead of overflowing
    assert math.isfinite(summarise(1e6, 1, 1).perplexity)


# --- text with symbols the model never saw ---------------------------------------------------------

UNSEEN = "The keeper’s lamp — à la mode — lit the stairs #7."  # ’ — à # 7 are not in the prose


def vocabulary_of(tokenizer) -> list[str]:
    return [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]


def test_unseen_characters_are_refused_by_default_naming_them_with_their_count_and_share(
    char_model, char_tokenizer
):
    unseen = [c for c in dict.fromkeys(UNSEEN) if c not in vocabulary_of(char_tokenizer)]
    assert len(unseen) >= 4
    occurrences = sum(UNSEEN.count(c) for c in unseen)
    with pytest.raises(TextgenError) as error:
        evaluate_text(char_model, char_tokenizer, UNSEEN, label="notes.txt")
    message = str(error.value)
    assert message.startswith(f"notes.txt has {len(unseen)} symbols the model never saw (")
    assert all(repr(c) in message for c in unseen)
    assert f"{occurrences} occurrences, {occurrences / len(UNSEEN):.2%} of the text" in message
    assert "; unknown skip or unknown replace scores it without them" in message  # the Python keyword
    assert "; --unknown skip or --unknown replace" in error.value.worded(flag_for)



def test_skipping_unseen_characters_scores_exactly_the_text_without_them(char_model, char_tokenizer):
    known = set(vocabulary_of(char_tokenizer))
    kept = "".join(c for c in UNSEEN if c in known)
    occurrences = len(UNSEEN) - len(kept)
    skipped = evaluate_text(char_model, char_tokenizer, UNSEEN, unknown="skip")
    plain = evaluate_text(char_model, char_tokenizer, kept)
    assert (skipped.unseen, skipped.unseen_handling) == (occurrences, "skipped")
    assert (skipped.tokens, skipped.characters) == (plain.tokens, plain.characters)
    assert skipped.loss == pytest.approx(plain.loss, rel=1e-9)
    assert skipped.to_json()["unseen_symbols"] == occurrences


def test_replacing_unseen_characters_scores_the_stand_ins(char_model, char_tokenizer):
    replaced = evaluate_text(char_model, char_tokenizer, UNSEEN, unknown="replace")
    assert replaced.unseen_handling == "replaced" and replaced.unseen > 0
    # ’ becomes ', à becomes a: the text the model reads keeps most of its length
    assert replaced.characters >= len(UNSEEN) - 1 - UNSEEN.count("—") - UNSEEN.count("#") - UNSEEN.count("7")
    assert math.isfinite(replaced.loss)


def test_a_word_model_scores_unseen_words_as_unk_and_says_how_many(make_model, prose):
    tokenizer = build_tokenizer(TokenizerConfig(kind="word", min_count=1), prose)
    model = make_model(tokenizer.vocab_size, cell="gru", hidden_size=16, seed=2)
    text = "The keeper saw zebras and giraffes on the stairs."
    default = evaluate_text(model, tokenizer, text)
    assert (default.unseen, default.unseen_handling) == (3, "<unk>")  # saw, zebras, giraffes
    assert default.tokens == len(tokenizer.encode(text)) - 1
    skipped = evaluate_text(model, tokenizer, text, unknown="skip")
    assert (skipped.unseen, skipped.unseen_handling) == (3, "skipped")
    assert skipped.tokens == default.tokens - 3
    assert skipped.characters == default.characters - len("saw" "zebras" "giraffes")
    replaced = evaluate_text(model, tokenizer, text, unknown="replace")
    assert replaced.loss == default.loss and replaced.unseen_handling == "<unk>"


def test_a_text_with_nothing_unseen_reports_none(char_model, char_tokenizer):
    result = evaluate_text(char_model, char_tokenizer, SENTENCE, unknown="skip")
    assert (result.unseen, result.unseen_handling) == (0, "")
    with pytest.raises(TextgenError, match="^unknown must be one of error, skip, replace"):
        evaluate_text(char_model, char_tokenizer, SENTENCE, unknown="ignore")


def test_random_windows_loss_is_nanogpts_protocol_computed_by_hand(char_model, char_tokenizer, prose):
    from textgen.evaluation import random_windows_loss

    ids = torch.tensor(char_tokenizer.encode(prose))
    nats, count = random_windows_loss(char_model, ids, length=12, count=5, seed=4)
    starts = torch.randint(0, ids.numel() - 12, (5,), generator=torch.Generator().manual_seed(4)).tolist()
    by_hand = sum(loss_by_hand(char_model, ids[s : s + 13].tolist(), rows=1) for s in starts)
    assert count == 60 and nats == pytest.approx(by_hand, rel=1e-5)
