"""An n-gram companion for the recurrent model: Kneser-Ney counts of the training text.

Counting tiny Shakespeare's million characters takes 0.4 s, and its 7-grams smoothed this way
predict its held-out part about as well as an LSTM trained for 80 s on one CPU core. The two
err differently, so the model mixes its own distribution with the counts' (textgen/model/rnn.py)
and learns, token by token, how far to trust each: the network need not spend its first minutes
learning what counting tells at once.

The smoothing is interpolated Kneser-Ney as Chen & Goodman (1998) modified it, three discounts
per order (for counts of 1, 2 and 3 or more) estimated from the counts: the longest context uses the raw counts,
every shorter one the number of distinct tokens seen before it (continuation counts), and the
shortest interpolates with the uniform distribution, so no token ever has probability zero.
A context shorter than the longest (a stream's first tokens) starts from its own order.

While the model trains on the very text that was counted, each prediction is made from the
counts with its own occurrence left out (`held_out_probability`): as if the text were new, which is how the
counts will meet text later. Without it the counts look perfect on the training text and the
model learns to trust them far too much.

The tables are buffers (saved with the weights, so nothing is unpickled): for each context
length k, the contexts sorted by key, where each one's (token, count) pairs start, and per pair
its token, raw count and continuation count. Training looks up a batch of predictions at once
with tensor operations (`_computed`); reading goes row by row on the host through a cache.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

def _keys(ids: torch.Tensor, length: int, vocab_size: int) -> torch.Tensor:
    """The key of every run of `length` consecutive ids in the 1-D `ids`, in order."""
    keys = torch.zeros(ids.numel() - length + 1, dtype=torch.long)
    for j in range(length):
        keys = keys * vocab_size + ids[j : ids.numel() - length + 1 + j]
    return keys


def _discounts(counts: torch.Tensor) -> torch.Tensor:
    """Chen & Goodman's three discounts, for a count of 1, 2 and 3 or more, from how many pairs
    have each count (n1 .. n4): kept inside sensible bounds for tiny or odd texts. Index 0 (no
    count) discounts nothing."""
    n = [max(1, int((counts == c).sum())) for c in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1])
    found = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
    return torch.tensor([0.0] + [min(c + 0.0, max(0.05, d)) for c, d in zip((0.95, 1.9, 2.9), found)])


TABLES = ("contexts", "starts", "tokens", "raw", "continuation")
# Contexts whose distributions are kept for reading (sampling, serving, scoring): about 4 MB of
# numbers for 65 characters, allocated as they fill; then the cache starts again.
CACHED_CONTEXTS = 16_384
# Calls with this many rows or more (scoring a text) are read all at once, without the cache,
# in the same float32 arithmetic, so that a row's numbers never depend on the path it took.
BULK_ROWS = 256
KINDS = ("raw", "continuation")


class NGramCounts(nn.Module):
    """Kneser-Ney counts of `order`-grams (a context of order - 1 tokens and the token after it)."""

    def __init__(self, vocab_size: int, order: int, tables: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.vocab_size, self.order = vocab_size, order
        self.context = order - 1
        for name, value in tables.items():  # each its own storage, as safetensors saves them
            self.register_buffer(name.replace(".", "_"), value.clone())
        self._derive()

    @staticmethod
    def table_names(order: int) -> list[str]:
        """The names of the saved tables, as the state dict holds them under the model's `ngram.`."""
        return [f"{name}_{k}" for k in range(order) for name in TABLES]

    def _table(self, name: str, k: int) -> torch.Tensor:
        return getattr(self, f"{name}_{k}")

    @classmethod
    def count(cls, ids: torch.Tensor, vocab_size: int, order: int) -> NGramCounts:
        """The counts of the 1-D tensor of token ids `ids` (a stream, or documents joined by their
        boundary marker)."""
        ids = ids.to("cpu", torch.long).flatten()
        tables: dict[str, torch.Tensor] = {}
        above: torch.Tensor | None = None  # the pair keys one order up, with their leading token
        for k in range(order - 1, -1, -1):
            if ids.numel() > k:
                pairs, raw = torch.unique(_keys(ids, k + 1, vocab_size), sorted=True, return_counts=True)
            else:
                pairs, raw = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            continuation = torch.zeros_like(raw)
            if above is not None and above.numel():
                # N1+(. context token): how many distinct tokens came before the pair.
                dropped, before = torch.unique(above % vocab_size ** (k + 1), sorted=True, return_counts=True)
                continuation[torch.searchsorted(pairs, dropped)] = before
            contexts, lengths = torch.unique_consecutive(pairs // vocab_size, return_counts=True)
            tables[f"contexts.{k}"] = contexts
            tables[f"starts.{k}"] = torch.cumsum(lengths, 0) - lengths
            tables[f"tokens.{k}"] = (pairs % vocab_size).to(torch.int32)
            tables[f"raw.{k}"] = raw.to(torch.int32)
            tables[f"continuation.{k}"] = continuation.to(torch.int32)
            above = pairs
        return cls(vocab_size, order, tables)

    def _derive(self) -> None:
        """The tables of every order as one: contexts keyed (key * order + k) and sorted, each
        with where its pairs start, how many, and per kind (raw, continuation) its total and the
        mass its discounts free for shorter contexts; the pairs' tokens and counts side by side;
        the discounts (order, kind, count 0..3+). Buffers not saved: they follow from the tables,
        and move with them to a device."""
        keys, starts, lengths, totals, freed, tokens, counts, discounts = [], [], [], [], [], [], [], []
        offset = 0
        for k in range(self.order):
            first, pair_tokens = self._table("starts", k), self._table("tokens", k)
            run = torch.diff(first, append=torch.tensor([pair_tokens.numel()], device=first.device))
            segment = torch.repeat_interleave(torch.arange(first.numel(), device=first.device), run)
            values = torch.stack([self._table(kind, k).to(torch.long) for kind in KINDS], dim=1)
            discounts.append(torch.stack([_discounts(values[:, j]) for j in range(len(KINDS))]).to(first.device))
            taken = torch.stack([discounts[-1][j][values[:, j].clamp(max=3)] for j in range(len(KINDS))], dim=1)
            totals.append(torch.zeros(first.numel(), len(KINDS), dtype=torch.long,
                                      device=first.device).index_add_(0, segment, values))
            freed.append(torch.zeros(first.numel(), len(KINDS), device=first.device).index_add_(0, segment, taken))
            keys.append(self._table("contexts", k) * self.order + k)
            starts.append(first + offset)
            lengths.append(run)
            tokens.append(pair_tokens.to(torch.long))
            counts.append(values)
            offset += pair_tokens.numel()
        keys_all = torch.cat(keys)
        order = torch.argsort(keys_all)
        for name, parts in (("starts", starts), ("lengths", lengths), ("totals", totals), ("freed", freed)):
            self.register_buffer(f"all_{name}", torch.cat(parts)[order], persistent=False)
        self.register_buffer("all_keys", keys_all[order], persistent=False)
        self.register_buffer("all_tokens", torch.cat(tokens), persistent=False)
        self.register_buffer("all_counts", torch.cat(counts), persistent=False)
        self.register_buffer("discounts", torch.stack(discounts), persistent=False)
        # Each pair keyed (context key * vocab + token) * order + k, sorted, with its row in the
        # pair tables: training looks a target up directly.
        pair_keys = torch.cat([(torch.repeat_interleave(self._table("contexts", k), lengths[k]) * self.vocab_size
                                + tokens[k]) * self.order + k for k in range(self.order)])
        pair_order = torch.argsort(pair_keys)
        self.register_buffer("all_pair_keys", pair_keys[pair_order], persistent=False)
        self.register_buffer("all_pair_rows", pair_order, persistent=False)
        self._tables_on_host: _HostReader | None = None  # made at the first read
        self._lock = threading.Lock()

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's own signature
        self._tables_on_host = None  # made again from the tables wherever they now are
        return super()._apply(fn, recurse)

    def distribution(self, history: torch.Tensor) -> torch.Tensor:
        """history: (rows, order - 1) ids, the most recent last, -1 where there is none yet (a
        stream's start) -> the next token's probabilities (rows, vocab), float32.

        Reading goes row by row through a cache of the contexts met so far, each
        order's distribution kept apart (p_k = A_k + lambda_k p_(k-1), the shorter context's p
        shared by every longer one): text revisits its contexts, a row costs microseconds where
        the batched computation costs a few dozen tensor operations per call, several times a
        small network's step, and each row's numbers are its own whatever else is in the batch."""
        with self._lock:
            if self._tables_on_host is None:
                self._tables_on_host = _HostReader(self)
            reader = self._tables_on_host
            if history.shape[0] >= BULK_ROWS:  # scoring a text: all at once, the same numbers
                out = reader.rows(history.cpu().numpy().astype(np.int64))
            else:
                rows = history.tolist()
                out = np.empty((len(rows), self.vocab_size), dtype=np.float32)
                for r, row in enumerate(rows):
                    out[r] = reader.row(row)
        return torch.from_numpy(out).to(self.all_keys.device)

    def held_out_probability(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The probability of each of `targets` (rows,) after its `history` (rows, order - 1), where
        this very occurrence was counted (training on the counted text): taken from the counts as
        if it had not been, which is how the counts will meet new text. Training needs the
        target's probability alone, so each order is one lookup per row, not one per symbol.

        Interpolated Kneser-Ney is p_k = A_k + lambda_k p_(k-1) from the uniform distribution up,
        so p = sum over k of A_k times the lambdas above k, every order looked up at once."""
        device = self.all_keys.device
        history, targets = history.to(device, torch.long), targets.to(device, torch.long)
        rows, vocab, orders = history.shape[0], self.vocab_size, self.order
        k = torch.arange(orders, device=device)
        known = (history >= 0).sum(1)
        # The key of each row's last k tokens, for every k, then where each context lies.
        recent = history.flip(1).clamp(min=0) * vocab ** torch.arange(self.context, device=device)
        contexts = torch.cat([torch.zeros(rows, 1, dtype=torch.long, device=device), recent.cumsum(1)], dim=1)
        index = torch.searchsorted(self.all_keys, contexts * orders + k).clamp_(max=max(0, self.all_keys.numel() - 1))
        found = (self.all_keys[index] == contexts * orders + k) & (k <= known[:, None])
        pairs = (contexts * vocab + targets[:, None]) * orders + k
        at = torch.searchsorted(self.all_pair_keys, pairs).clamp_(max=max(0, self.all_pair_keys.numel() - 1))
        seen = (self.all_pair_keys[at] == pairs) & found
        counts = self.all_counts[self.all_pair_rows[at]] * seen[..., None]  # (rows, orders, kind)
        # A row's longest context uses raw counts; every shorter one continuation counts (how
        # many distinct tokens came before it), the lower orders' role being to back off.
        kind = (k != known.clamp(max=self.context)[:, None]).long()  # 0 raw, 1 continuation
        own = counts.gather(2, kind[..., None])[..., 0]
        total = self.all_totals[index, kind] * found
        freed = self.all_freed[index, kind] * found
        # The occurrence is in every raw count; in a continuation count only when its left
        # neighbour (known) had not come before this context and token anywhere else.
        raw_above = torch.cat([counts[:, 1:, 0], torch.zeros(rows, 1, dtype=torch.long, device=device)], dim=1)
        alone = (k < known[:, None]) & (raw_above == 1)
        out = torch.minimum((found & ((kind == 0) | alone)).long(), own)  # uncounted text: nothing to leave out
        discounts = self.discounts[k, kind]  # (rows, orders, 4)
        left = own - out
        total = total - out
        freed = freed - discounts.gather(2, own.clamp(max=3)[..., None])[..., 0] \
            + discounts.gather(2, left.clamp(max=3)[..., None])[..., 0]
        usable = found & (total > 0)
        scale = torch.where(usable, 1.0 / total.clamp(min=1), 0.0)
        lambdas = torch.where(usable, freed * scale, 1.0)
        above = lambdas.flip(1).cumprod(1).flip(1)  # above[:, k]: the product of lambdas from k up
        weight = torch.cat([above[:, 1:], torch.ones(rows, 1, device=device)], dim=1) * scale
        mass = (left - discounts.gather(2, left.clamp(max=3)[..., None])[..., 0]).clamp(min=0) * weight
        return above[:, 0] / vocab + mass.sum(1)


class _HostReader:
    """The tables as numpy arrays on the host, and the cache of context distributions that
    NGramCounts.distribution reads rows through: one (context, kind) at a time, each order's
    distribution from the next shorter context's."""

    def __init__(self, counts: NGramCounts) -> None:
        host = {name: getattr(counts, f"all_{name}").cpu().numpy()
                for name in ("keys", "starts", "lengths", "totals", "freed", "tokens", "counts")}
        self.keys, self.starts, self.lengths = host["keys"], host["starts"], host["lengths"]
        self.totals, self.freed, self.tokens, self.counts = host["totals"], host["freed"], host["tokens"], host["counts"]
        self.discounts = counts.discounts.cpu().numpy()
        self.vocab, self.order = counts.vocab_size, counts.order
        self.uniform = np.full(self.vocab, 1.0 / self.vocab, dtype=np.float32)
        self.slots = np.empty((0, self.vocab), dtype=np.float32)  # grown as the cache fills
        self.slot_of: dict[tuple[tuple[int, ...], int], int] = {}

    def row(self, history: list[int]) -> np.ndarray:
        """The distribution after `history` (order - 1 ids, -1 for none, which come first); a view
        into the cache, to be copied before the next call."""
        known = len(history) - history.count(-1)
        return self._level(tuple(history[len(history) - known :]) if known else (), 0)

    def _level(self, context: tuple[int, ...], kind: int) -> np.ndarray:
        """p for `context` (its length is the order) read with raw (0) or continuation (1) counts."""
        slot = self.slot_of.get((context, kind))
        if slot is not None:
            return self.slots[slot]
        k = len(context)
        lower = self._level(context[1:], 1) if k else self.uniform
        key = 0
        for token in context:
            key = key * self.vocab + token
        key = key * self.order + k
        index = int(np.searchsorted(self.keys, key))
        p = lower
        if index < len(self.keys) and self.keys[index] == key and self.totals[index, kind] > 0:
            total = self.totals[index, kind]
            start, length = int(self.starts[index]), int(self.lengths[index])
            counts = self.counts[start : start + length, kind]
            taken = self.discounts[k, kind][np.minimum(counts, 3)]
            # The arithmetic `rows` repeats: float32 lambdas, float64 masses rounded to float32.
            p = lower * (self.freed[index, kind] / np.float32(total))
            p[self.tokens[start : start + length]] += (np.maximum(counts - taken, 0) / np.float64(total)).astype(
                np.float32)
        return self._keep((context, kind), p)

    def rows(self, history: np.ndarray) -> np.ndarray:
        """`row` for every row of `history` (rows, order - 1) at once, order by order, with the
        same float32 operations in the same order, so each row's numbers are the ones `row` gives."""
        count, context = history.shape
        known = (history >= 0).sum(1)
        top = np.minimum(known, context)
        p = np.tile(self.uniform, (count, 1))
        key = np.zeros(count, dtype=np.int64)
        for k in range(self.order):
            if k:
                key = key + np.maximum(history[:, context - k], 0) * self.vocab ** (k - 1)
            kind = np.where(top == k, 0, 1)
            wanted = key * self.order + k
            index = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
            total = self.totals[index, kind]
            usable = np.flatnonzero((k <= top) & (self.keys[index] == wanted) & (total > 0))
            if not len(usable):
                continue
            index, kind, total = index[usable], kind[usable], total[usable]
            p[usable] *= (self.freed[index, kind] / total.astype(np.float32))[:, None]
            span = np.arange(int(self.lengths[index].max()))
            inside = span < self.lengths[index][:, None]
            where = (self.starts[index][:, None] + span)[inside]
            which = np.repeat(np.arange(len(usable)), self.lengths[index])
            counts = self.counts[where, kind[which]]
            taken = self.discounts[k, kind[which], np.minimum(counts, 3)]
            mass = (np.maximum(counts - taken, 0) / total[which].astype(np.float64)).astype(np.float32)
            p[usable[which], self.tokens[where]] += mass
        return p

    def _keep(self, key: tuple[tuple[int, ...], int], p: np.ndarray) -> np.ndarray:
        if len(self.slot_of) >= CACHED_CONTEXTS:
            self.slot_of.clear()  # starting again is cheap; tracking recency would cost every hit
        slot = len(self.slot_of)
        if slot >= len(self.slots):
            grown = np.empty((min(CACHED_CONTEXTS, max(64, 2 * len(self.slots))), self.vocab), dtype=np.float32)
            grown[: len(self.slots)] = self.slots
            self.slots = grown
        self.slots[slot] = p
        self.slot_of[key] = slot
        return self.slots[slot]
