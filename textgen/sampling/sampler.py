"""Generating text: prime the model with a seed phrase in one pass, then draw token after token
for a batch of samples, carrying the recurrent state so each new token costs the same (the text
is never fed again).

    seed phrase ──prime (model.forward, once)──▶ logits, state ──┐
          ┌────────────────────────────────────────────────────────┘
          ▼
    repetition penalty ▶ temperature ▶ top-k ▶ top-p ▶ draw (one uniform per sample) ──▶ token
          ▲                                                                             │
          └──────────── FastStep(token, state): cached weights, one token a step ◀──────┘

Each sample draws from its own random stream, seeded from the seed and its index, so sample 1
is the same whether 1 or 16 are made, and a sample that ends early changes no other.
Yields text pieces as they are made; knows nothing of files or terminals.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

from textgen.config import MAX_SEED, SampleConfig, SettingError
from textgen.model import RNNLanguageModel, Step, make_step, prime
from textgen.sampling.shaping import choose_tokens
from textgen.tokenizers import StreamDecoder, Tokenizer, describe_symbols, encode_leniently, end_marker


class SamplePiece(NamedTuple):
    """Text just made for sample `index` (0-based); `finished` is True on its last piece."""

    index: int
    text: str
    finished: bool


# --- the seed phrase ----------------------------------------------------------------------------


def prompt_ids(tokenizer: Tokenizer, prompt: str, unknown: str = "error") -> list[int]:
    """The seed phrase as ids; an empty one starts the model at a line break, as if after a paragraph,
    and a document-mode model always starts after its end marker, at the top of a new document.

    Symbols the model never saw are an error naming them, or are skipped or replaced (`unknown`).
    """
    if unknown == "error":
        unseen = tokenizer.unknown_symbols(prompt)
        if unseen:
            raise SettingError(
                f"the seed text has symbols the model never saw: {describe_symbols(unseen)} "
                "({unknown} skip or {unknown} replace to go on without them)", "unknown"
            )
        ids = tokenizer.encode(prompt)
    else:
        ids = encode_leniently(tokenizer, prompt, unknown)
    end_id = end_marker(tokenizer)
    if end_id is not None:  # a document begins after the end marker, whatever the seed phrase
        return [end_id, *ids]
    if ids:
        return ids
    if not tokenizer.unknown_symbols("\n"):
        return tokenizer.encode("\n")
    return [0]


def resolve_seed(seed: int | None) -> int:
    """The seed itself, or a fresh one that can be reported so the run can be repeated."""
    return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def sample_stream(seed: int, index: int) -> random.Random:
    """The random numbers of sample `index`: its own stream, the same however many samples there are."""
    return random.Random((seed << 32) | index)

# --- a sample's text ----------------------------------------------------------------------------


class SampleText:
    """One sample's text as its tokens arrive: decoded, cut at `length` characters (None: no cut; the
    caller counts tokens and calls `finish`) and just before the first stop text. A tail that could
    still grow into a stop text, or half a UTF-8 character, is held back until it cannot, so no
    piece ever has to be taken back. `stopped` says whether a stop text or the end marker ended it."""

    def __init__(self, tokenizer: Tokenizer, length: int | None, stops: Sequence[str]) -> None:
        self.decoder = StreamDecoder(tokenizer)
        self.end_id = end_marker(tokenizer)  # a document-mode model ends its sample here
        self.length = length
        self.stops = list(stops)
        self.longest_stop = max(map(len, self.stops), default=0)
        self.pending = ""
        self.emitted = 0
        self.finished = False
        self.stopped = False
        # Decoding may hold text back (a partial UTF-8 sequence); the cap stops a model that only
        # ever emits such tokens from looping forever.
        self.tokens_left = 8 * length + 64 if length is not None else None

    def feed(self, token: int) -> str:
        """The text that token `token` makes safe to show (maybe none)."""
        if self.tokens_left is not None:
            self.tokens_left -= 1
        if token == self.end_id:
            self.stopped = True
            return self._add(self.decoder.flush(), last=True)
        text = self._add(self.decoder.feed(token))
        if not self.finished and self.tokens_left is not None and self.tokens_left <= 0:
            text += self._add(self.decoder.flush(), last=True)
        return text

    def finish(self) -> str:
        """End the text here (the token budget is spent): what is still held back, cut at a stop text."""
        return "" if self.finished else self._add(self.decoder.flush(), last=True)

    def _add(self, piece: str, last: bool = False) -> str:
        room = len(piece) + 1 if self.length is None else self.length - self.emitted - len(self.pending)
        if not self.stops and len(piece) < room and not last:
            self.emitted += len(piece)  # the common case, kept cheap: nothing to cut or hold back
            return piece
        piece = piece[:room]
        self.pending += piece
        last = last or len(piece) >= room
        cut = min((i for i in map(self.pending.find, self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.finished, self.stopped = self.pending[:cut], True, True
        elif last:
            out, self.finished = self.pending, True
        else:
            out = self.pending[: len(self.pending) - self._could_become_a_stop()]
        self.pending = "" if self.finished else self.pending[len(out) :]
        self.emitted += len(out)
        return out

    def _could_become_a_stop(self) -> int:
        """Length of the longest tail of the pending text that begins some stop text."""
        for size in range(min(len(self.pending), self.longest_stop - 1), 0, -1):
            tail = self.pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0


# --- the sampler --------------------------------------------------------------------------------


def sample_pieces(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    config: SampleConfig,
    step: Step | None = None,
) -> Iterator[SamplePiece]:
    """Make `config.num_samples` continuations of `prompt` as one batch, yielding each piece of
    text as it is made (pieces of different samples interleave).

    A sample ends at `config.length` characters or just before the first of `config.stop`; its
    last piece has `finished` set. `config.seed` None draws a fresh seed (pass
    `resolve_seed(None)` yourself to know it). `step`: a cached make_step(model), if any.
    """
    ids = prompt_ids(tokenizer, prompt, config.unknown)
    seed = resolve_seed(config.seed)
    streams = [sample_stream(seed, index) for index in range(config.num_samples)]
    texts = [SampleText(tokenizer, config.length, config.stop) for _ in streams]
    rows = list(range(config.num_samples))  # the sample each batch row holds
    batch = _Batch(model, step, config, ids, tokenizer.unk_id, end_marker(tokenizer))
    # Torch runs inside _Batch's methods only, so no grad mode stays switched in the caller's code
    # while this generator waits between pieces.
    tokens = batch.start(streams)
    row_streams = streams
    while True:
        finished = set()
        for row, (sample, token) in enumerate(zip(rows, tokens)):
            text = texts[sample].feed(token)
            if text or texts[sample].finished:
                yield SamplePiece(sample, text, texts[sample].finished)
            if texts[sample].finished:
                finished.add(row)
        if finished:
            keep = [row for row in range(len(rows)) if row not in finished]
            if not keep:
                return
            rows = [rows[row] for row in keep]
            row_streams = [streams[sample] for sample in rows]
            batch.keep(keep)
        tokens = batch.advance(row_streams)


class _Batch:
    """The tensors of a batch of samples: logits, recurrent state, tokens seen (for the penalty).

    After `start`, no tensor here requires grad (FastStep holds detached weights; ModuleStep runs
    under no_grad), so the steps skip a grad-mode switch, which costs as much as a small tensor op.
    """

    def __init__(self, model: RNNLanguageModel, step: Step | None, config: SampleConfig,
                 ids: list[int], banned: int | None, end_id: int | None = None) -> None:
        self.model, self.step, self.config, self.ids, self.banned = model, step, config, ids, banned
        self.end_id = end_id  # never penalised as a repeat: every document needs its end

    @torch.no_grad()
    def start(self, streams: list[random.Random]) -> list[int]:
        """Prime on the seed phrase and draw each sample's first token."""
        model, n = self.model, len(streams)
        model.eval()
        if self.step is None:
            self.step = make_step(model)
        logits, state = prime(model, self.ids)
        self.state = self.step.from_model_state(state, n)
        self.logits = logits.repeat(n, 1)
        self.seen = None
        if self.config.repetition_penalty != 1.0:
            self.seen = torch.zeros(self.logits.shape, dtype=torch.bool, device=self.logits.device)
            self.seen[:, torch.tensor(self.ids, device=self.logits.device)] = True
        return self._choose(streams)

    def _choose(self, streams: list[random.Random]) -> list[int]:
        tokens = choose_tokens(self.logits, self.config, streams, self.seen, self.banned)
        self.tokens = torch.tensor(tokens, device=self.logits.device)
        if self.seen is not None:
            self.seen[torch.arange(len(tokens), device=self.seen.device), self.tokens] = True
            if self.end_id is not None:
                self.seen[:, self.end_id] = False
        return tokens

    def keep(self, rows: list[int]) -> None:
        """Go on with these rows only (the others' samples are finished)."""
        index = torch.tensor(rows, device=self.tokens.device)
        self.tokens = self.tokens[index]
        self.state = self.step.select(self.state, index)
        if self.seen is not None:
            self.seen = self.seen[index]

    def advance(self, streams: list[random.Random]) -> list[int]:
        """Feed each row's last token and draw its next."""
        self.logits, self.state = self.step(self.tokens, self.state)
        return self._choose(streams)
