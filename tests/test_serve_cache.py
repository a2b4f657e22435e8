"""Tests for textgen.serve.cache: the longest cached prefix is found, the least recently used
state goes first, what the entries cost stays within the bound, a replaced model's states are dropped."""

from __future__ import annotations

import torch

from textgen.serve.cache import ENTRY_OBJECT_BYTES, ID_BYTES, CachedState, StateCache, entry_bytes


def entry(length: int, hidden: int = 10) -> CachedState:
    """A state of `hidden` floats and logits of 5: (hidden + 5) * 4 bytes."""
    return CachedState(length, (torch.full((1, hidden), float(length)),), torch.zeros(5))


def test_an_entry_counts_its_tensors_its_key_and_its_objects():
    assert entry(3, hidden=10).nbytes == (10 + 5) * 4
    assert entry_bytes([7, 8, 9], entry(3)) == (10 + 5) * 4 + 3 * ID_BYTES + ENTRY_OBJECT_BYTES > 0


def test_the_longest_cached_prefix_of_the_ids_is_found():
    cache = StateCache(max_mb=1)
    cache.put("m", [1, 2], entry(2))
    cache.put("m", [1, 2, 3, 4], entry(4))
    cache.put("m", [1, 2, 9], entry(3))
    assert cache.longest_prefix("m", [1, 2, 3, 4, 5]).length == 4
    assert cache.longest_prefix("m", [1, 2, 3]).length == 2
    assert cache.longest_prefix("m", [1, 2, 3, 4]).length == 4  # the whole prompt
    assert cache.longest_prefix("m", [2, 1]) is None


def test_states_of_one_model_never_answer_for_another():
    cache = StateCache(max_mb=1)
    cache.put(("m", 0), [1, 2], entry(2))
    assert cache.longest_prefix(("m", 1), [1, 2, 3]) is None
    cache.drop(("m", 0))
    assert (len(cache), cache.bytes, cache.longest_prefix(("m", 0), [1, 2, 3])) == (0, 0, None)


def test_the_least_recently_used_state_goes_first_and_the_bytes_stay_within_the_bound():
    size = entry_bytes([0], entry(1))
    cache = StateCache(max_mb=3 * size / 1_000_000)
    for token in (1, 2, 3):
        cache.put("m", [token], entry(1))
    assert cache.longest_prefix("m", [1]) is not None  # used: now the most recent
    cache.put("m", [4], entry(1))
    assert cache.bytes == 3 * size
    assert cache.longest_prefix("m", [2]) is None  # [2] was the least recently used
    assert all(cache.longest_prefix("m", [token]) is not None for token in (1, 3, 4))


def test_putting_the_same_ids_again_replaces_the_entry():
    cache = StateCache(max_mb=1)
    cache.put("m", [1], entry(1))
    cache.put("m", [1], entry(1, hidden=20))
    assert (len(cache), cache.bytes) == (1, entry_bytes([1], entry(1, hidden=20)))


def test_an_entry_bigger_than_the_bound_is_not_kept():
    cache = StateCache(max_mb=0.00001)  # 10 bytes
    cache.put("m", [1], entry(1))
    assert (len(cache), cache.bytes) == (0, 0)


def test_a_packed_entry_gives_back_its_parts_and_logits_as_they_were_and_counts_their_bytes():
    h, c, logits = torch.randn(2, 1, 6), torch.randn(2, 1, 6), torch.randn(5)
    packed = CachedState.packed(3, [h, c, logits])
    assert packed.length == 3
    assert [tuple(part.shape) for part in packed.state] == [(2, 1, 6), (2, 1, 6)]
    assert all(torch.equal(got, wanted) for got, wanted in zip(packed.state, (h, c)))
    assert torch.equal(packed.logits, logits)
    assert packed.nbytes == (12 + 12 + 5) * 4
    h.zero_()  # a copy: the batch the state came from moves on
    assert not torch.equal(packed.state[0], h)
