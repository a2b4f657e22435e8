"""The n-gram companion's counts (textgen/model/ngram.py) against a plain-Python Kneser-Ney.

The reference counts every n-gram occurrence one by one in dictionaries and smooths with the same
discounts; leaving an occurrence out is checked against counting the text without the n-grams
that end at that position, which is what leave-one-out means.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from textgen.model.ngram import NGramCounts

VOCAB = 5
ORDER = 4


def _text(seed: int, length: int = 400) -> list[int]:
    """A text with structure worth counting: a few repeated motifs among random tokens."""
    rng = random.Random(seed)
    motifs = [[rng.randrange(VOCAB) for _ in range(rng.randint(3, 6))] for _ in range(4)]
    ids: list[int] = []
    while len(ids) < length:
        ids += rng.choice(motifs) if rng.random() < 0.7 else [rng.randrange(VOCAB)]
    return ids[:length]


def _reference_counts(ids: list[int], order: int, skip: int | None = None) -> tuple[list[Counter], list[Counter]]:
    """raw[k][(context, token)] and continuation[k][(context, token)], context a tuple of k ids,
    from every position but `skip` (the n-grams that end there are not counted)."""
    raw = [Counter() for _ in range(order)]
    for k in range(order):
        for i in range(k, len(ids)):
            if i != skip:
                raw[k][tuple(ids[i - k : i]), ids[i]] += 1
    continuation = [Counter() for _ in range(order)]
    for k in range(order - 1):
        for (context, token), count in raw[k + 1].items():
            if count > 0:
                continuation[k][context[1:], token] += 1
    return raw, continuation


def _reference_distribution(raw: list[Counter], continuation: list[Counter], discounts: dict, history: list[int],
                            order: int) -> list[float]:
    top = min(len(history), order - 1)
    p = [1.0 / VOCAB] * VOCAB
    for k in range(top + 1):
        kind, table = ("raw", raw[k]) if k == top else ("continuation", continuation[k])
        context = tuple(history[len(history) - k :]) if k else ()
        counts = [table.get((context, token), 0) for token in range(VOCAB)]
        total = sum(counts)
        if total == 0:
            continue
        discount = discounts[kind, k]
        freed = sum(discount[min(c, 3)] for c in counts if c > 0)
        p = [(max(c - discount[min(c, 3)], 0.0) + freed * q) / total for c, q in zip(counts, p)]
    return p


def _discounts(counts: NGramCounts) -> dict:
    return {(kind, k): counts.discounts[k, ("raw", "continuation").index(kind)].tolist()
            for k in range(counts.order) for kind in ("raw", "continuation")}


def _as_rows(histories: list[list[int]], order: int) -> torch.Tensor:
    return torch.tensor([[-1] * (order - 1 - len(h)) + h[len(h) - (order - 1):] if len(h) >= order - 1
                         else [-1] * (order - 1 - len(h)) + h for h in histories])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_distribution_is_kneser_ney_over_the_counts(seed: int) -> None:
    ids = _text(seed)
    counts = NGramCounts.count(torch.tensor(ids), VOCAB, ORDER)
    raw, continuation = _reference_counts(ids, ORDER)
    rng = random.Random(seed)
    # Seen and unseen contexts, and rows with less history than the longest context (-1 padding).
    histories = [ids[i - 3 : i] for i in range(3, 60)] + [[rng.randrange(VOCAB) for _ in range(3)] for _ in range(20)]
    histories += [ids[5:7], ids[9:10], [], [rng.randrange(VOCAB)]]
    got = counts.distribution(_as_rows(histories, ORDER))
    for row, history in zip(got.tolist(), histories):
        assert row == pytest.approx(_reference_distribution(raw, continuation, _discounts(counts), history, ORDER),
                                    abs=1e-5)
    assert torch.allclose(got.sum(1), torch.ones(len(histories)), atol=1e-5)
    assert (got > 0).all()  # the uniform floor: no token is ever impossible


@pytest.mark.parametrize("seed", [0, 3])
def test_leaving_an_occurrence_out_is_counting_the_text_without_it(seed: int) -> None:
    ids = _text(seed)
    counts = NGramCounts.count(torch.tensor(ids), VOCAB, ORDER)
    discounts = _discounts(counts)
    positions = list(range(3, len(ids), 7))
    histories = [ids[i - 3 : i] for i in positions]
    got = counts.held_out_probability(_as_rows(histories, ORDER), torch.tensor([ids[i] for i in positions]))
    for p, i, history in zip(got.tolist(), positions, histories):
        raw, continuation = _reference_counts(ids, ORDER, skip=i)
        assert p == pytest.approx(_reference_distribution(raw, continuation, discounts, history, ORDER)[ids[i]],
                                  abs=1e-5)


def test_a_rare_context_left_out_backs_off_instead_of_predicting_itself() -> None:
    ids = _text(4) + [4, 4, 4, 0]  # the context (4, 4, 4) once, followed by 0
    counts = NGramCounts.count(torch.tensor(ids), VOCAB, ORDER)
    history = torch.tensor([[4, 4, 4]])
    seen = counts.distribution(history)[0, 0]
    unseen = counts.held_out_probability(history, torch.tensor([0]))[0]
    assert seen > 0.5 > unseen


def test_the_tables_survive_a_round_trip_through_safetensors(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    counts = NGramCounts.count(torch.tensor(_text(5)), VOCAB, ORDER)
    save_file({name: value for name, value in counts.state_dict().items()}, str(tmp_path / "counts.safetensors"))
    again = NGramCounts(VOCAB, ORDER, load_file(str(tmp_path / "counts.safetensors")))
    history = _as_rows([[1, 2, 3], [0], []], ORDER)
    assert torch.equal(again.distribution(history), counts.distribution(history))


def test_a_text_shorter_than_the_order_still_gives_a_distribution() -> None:
    counts = NGramCounts.count(torch.tensor([1, 2]), VOCAB, ORDER)
    p = counts.distribution(_as_rows([[1, 2], [3, 3, 3]], ORDER))
    assert torch.allclose(p.sum(1), torch.ones(2)) and (p > 0).all()


def test_a_cached_answer_is_the_first_one_and_a_row_is_the_same_in_any_batch() -> None:
    counts = NGramCounts.count(torch.tensor(_text(6)), VOCAB, ORDER)
    histories = _as_rows([[1, 2, 3], [0], [], [1, 2, 3], [4, 4, 0]], ORDER)
    first, again = counts.distribution(histories), counts.distribution(histories)  # the second from the cache
    assert torch.equal(first, again)
    alone = torch.cat([counts.distribution(histories[i : i + 1]) for i in range(len(histories))])
    assert torch.equal(alone, first)


def test_a_target_never_seen_after_its_context_has_nothing_left_out() -> None:
    """Where the context was never followed by the token (nor its suffixes of two tokens or more,
    nor the last token by it exactly once), there is no occurrence to leave out: the held-out
    probability is the plain one."""
    ids = _text(7) + [4, 4, 4, 4, 0]
    counts = NGramCounts.count(torch.tensor(ids), VOCAB, ORDER)
    raw, _ = _reference_counts(ids, ORDER)
    history = _as_rows([[4, 4, 4]], ORDER)
    plain = counts.distribution(history)[0]
    never = [t for t in range(VOCAB) if all(raw[k].get(((4,) * k, t), 0) == 0 for k in range(2, ORDER))
             and raw[1].get(((4,), t), 0) != 1]
    assert never, "the text should leave some token never seen after a run of 4s"
    for token in never:
        assert float(counts.held_out_probability(history, torch.tensor([token]))[0]) == pytest.approx(
            float(plain[token]), abs=1e-6)


def test_the_training_columns_are_a_distribution_whose_target_is_the_held_out_mix() -> None:
    """Training reads the counts for the targets alone: its output has one column more, the
    counts' mass on every other token, so that cross-entropy over it is exactly the mix's."""
    from textgen.config import ModelConfig
    from textgen.model import RNNLanguageModel

    ids = torch.tensor(_text(8))
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=VOCAB, layers=1, hidden_size=8, embedding_size=4,
                                         ngram_order=ORDER))
    model.attach_counts(NGramCounts.count(ids, VOCAB, ORDER))
    seen: list[torch.Tensor] = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    inputs, targets = ids[None, 10:40], ids[None, 11:41]
    columns, _ = model(inputs, counted_targets=targets)
    assert columns.shape == (1, 30, VOCAB + 1)
    assert torch.allclose(columns.logsumexp(-1), torch.zeros(1, 30), atol=1e-5)
    gate, network = torch.sigmoid(seen[0][0, :, VOCAB]), torch.softmax(seen[0][0, :, :VOCAB], dim=-1)
    history = torch.cat([torch.full((1, ORDER - 1), -1), inputs], dim=1).unfold(1, ORDER - 1, 1)[0, 1:]
    held_out = model.ngram.held_out_probability(history, targets[0])
    expected = gate * network[torch.arange(30), targets[0]] + (1 - gate) * held_out
    assert torch.allclose(columns[0, torch.arange(30), targets[0]].exp(), expected, atol=1e-6)
    assert not torch.allclose(held_out, model.ngram.distribution(history)[torch.arange(30), targets[0]])


def test_scoring_a_text_at_once_gives_each_row_the_numbers_it_gets_alone() -> None:
    """Hundreds of rows (scoring) are read all at once, a few (sampling, serving) row by row
    through the cache: the same arithmetic, so the same numbers to the last bit."""
    ids = _text(9, 2000)
    counts = NGramCounts.count(torch.tensor(ids[:1500]), VOCAB, ORDER)
    histories = _as_rows([ids[i - 3 : i] for i in range(3, 2000)] + [[], [2], [1, 0]], ORDER)
    at_once = counts.distribution(histories)
    alone = torch.cat([counts.distribution(histories[i : i + 1]) for i in range(len(histories))])
    assert torch.equal(at_once, alone)
