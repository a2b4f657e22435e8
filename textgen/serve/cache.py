"""The state cache: a recurrent model's whole past is a state of a few kilobytes, so the state after
a prompt (and after prompt + completion) is kept, keyed by the model and the token ids that led to
it. A next request whose ids begin with a cached key is primed on the rest only.

Least recently used entries go first once the bound is passed. An entry counts its tensors' bytes,
its key's token ids and the Python and tensor objects around them, so the bound is what the
process holds for the cache, not only the numbers in it. The cache is the engine thread's alone
(no lock).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
import torch


class CachedState:
    """The state of one row after reading `length` tokens, and the logits (vocab,) for the next one.

    `packed` keeps them as one flat tensor and makes the parts as views when they are read: an
    entry is then one allocation rather than one per part and per view, which is what let the
    allocator's memory grow around a full cache."""

    __slots__ = ("length", "_state", "_logits", "_flat", "_shapes")

    def __init__(self, length: int, state: tuple[torch.Tensor, ...], logits: torch.Tensor) -> None:
        # state: each part (layers or 1, hidden): whatever the step's state holds
        self.length, self._state, self._logits = length, state, logits
        self._flat: torch.Tensor | None = None
        self._shapes: tuple[torch.Size, ...] = ()

    @classmethod
    def packed(cls, length: int, pieces: Sequence[torch.Tensor]) -> CachedState:
        """The state's parts then the logits (all of one dtype), copied into one tensor."""
        entry = cls(length, (), pieces[-1])
        entry._flat = torch.cat([piece.reshape(-1) for piece in pieces])
        entry._shapes = tuple(piece.shape for piece in pieces)
        entry._logits = None
        return entry

    def _views(self) -> list[torch.Tensor]:
        sizes = [shape.numel() for shape in self._shapes]
        return [view.view(shape) for view, shape in zip(self._flat.split(sizes), self._shapes)]

    @property
    def state(self) -> tuple[torch.Tensor, ...]:
        return self._state if self._flat is None else tuple(self._views()[:-1])

    @property
    def logits(self) -> torch.Tensor:
        return self._logits if self._flat is None else self._flat[-self._shapes[-1].numel():].view(self._shapes[-1])

    @property
    def nbytes(self) -> int:
        if self._flat is not None:
            return self._flat.numel() * self._flat.element_size()
        return sum(part.numel() * part.element_size() for part in (*self._state, self._logits))


Key = tuple[Hashable, tuple[int, ...]]

# A key holds one pointer per token id (the small ints themselves are shared); an entry's objects
# (its record, its tensors' headers and allocations, the key, the index slots) come to about this
# much besides: the resident memory 20,000 entries of a 2 x 512 LSTM added, less their data.
ID_BYTES = 8
ENTRY_OBJECT_BYTES = 2_800


def entry_bytes(ids: Sequence[int], entry: CachedState) -> int:
    """What keeping `entry` under these ids costs the process."""
    return entry.nbytes + ID_BYTES * len(ids) + ENTRY_OBJECT_BYTES


def prefix_hashes(ids: Sequence[int]) -> list[int]:
    """A hash of every prefix of `ids` in one pass: entry k stands for ids[: k + 1]."""
    hashes, running = [], 0
    for token in ids:
        running = hash((running, token))
        hashes.append(running)
    return hashes


class StateCache:
    """An LRU of states by (model key, token ids), bounded by `max_mb` megabytes (see entry_bytes).

    A lookup hashes the request's prefixes once, then tries one key per cached length, longest
    first, so a long conversation costs one pass over its ids however many states are kept."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 1_000_000)
        self.bytes = 0
        self._entries: OrderedDict[Key, CachedState] = OrderedDict()
        self._lengths: dict[Hashable, Counter[int]] = {}  # how many keys of each length a model has
        self._by_prefix: dict[tuple[Hashable, int, int], Key] = {}  # (model, length, prefix hash) -> key

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, model: Hashable, ids: Sequence[int], entry: CachedState) -> None:
        """Keep `entry` for these ids (an entry bigger than the whole bound is not kept)."""
        key = (model, tuple(ids))
        if entry_bytes(key[1], entry) > self.max_bytes or not key[1]:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self._lengths.setdefault(model, Counter())[len(key[1])] += 1
        self._by_prefix[self._slot(key)] = key
        self.bytes += entry_bytes(key[1], entry)
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    @staticmethod
    def _slot(key: Key) -> tuple[Hashable, int, int]:
        model, ids = key
        return model, len(ids), prefix_hashes(ids)[-1]

    def _remove(self, key: Key) -> None:
        self.bytes -= entry_bytes(key[1], self._entries.pop(key))
        slot = self._slot(key)
        if self._by_prefix.get(slot) == key:  # another key with the same hash may hold the slot
            del self._by_prefix[slot]
        lengths = self._lengths[key[0]]
        lengths[len(key[1])] -= 1
        if not lengths[len(key[1])]:
            del lengths[len(key[1])]

    def longest_prefix(self, model: Hashable, ids: Sequence[int]) -> CachedState | None:
        """The entry of the longest cached key that begins `ids` (or is all of it), marked as used."""
        ids = tuple(ids)
        hashes = None
        for length in sorted(self._lengths.get(model, ()), reverse=True):
            if length > len(ids):
                continue
            hashes = hashes or prefix_hashes(ids)
            key = self._by_prefix.get((model, length, hashes[length - 1]))
            if key is not None and key[1] == ids[:length]:
                self._entries.move_to_end(key)
                return self._entries[key]
        return None

    def drop(self, model: Hashable) -> None:
        """Forget every state of `model` (its weights changed)."""
        for key in [key for key in self._entries if key[0] == model]:
            self._remove(key)
        self._lengths.pop(model, None)
