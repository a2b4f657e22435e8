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
    got = counts.distribution(_as_rows(histories, ORDER), leave_out=torch.tensor([ids[i] for i in positions]))
    for row, i, history in zip(got.tolist(), positions, histories):
        raw, continuation = _reference_counts(ids, ORDER, skip=i)
        assert row == pytest.approx(_reference_distribution(raw, continuation, discounts, history, ORDER), abs=1e-5)


def test_a_rare_context_left_out_backs_off_instead_of_predicting_itself() -> None:
    ids = _text(4) + [4, 4, 4, 0]  # the context (4, 4, 4) once, followed by 0
    counts = NGramCounts.count(torch.tensor(ids), VOCAB, ORDER)
    history = torch.tensor([[4, 4, 4]])
    seen = counts.distribution(history)[0, 0]
    unseen = counts.distribution(history, leave_out=torch.tensor([0]))[0, 0]
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


def test_a_cached_answer_is_the_computed_one() -> None:
    counts = NGramCounts.count(torch.tensor(_text(6)), VOCAB, ORDER)
    histories = _as_rows([[1, 2, 3], [0], [], [1, 2, 3], [4, 4, 0]], ORDER)
    first, again = counts.distribution(histories), counts.distribution(histories)  # the second from the cache
    assert torch.equal(first, again)
    assert torch.allclose(again, counts.distribution(torch.cat([histories] * 20))[:5])  # 100 rows: computed
