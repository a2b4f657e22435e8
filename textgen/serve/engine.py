"""The serving engine: continuous batching of completion requests on one thread.

One engine thread steps every active row of every request of a model as one batch through the
model's one-token step. A row is a prompt being read (it feeds its prompt's next token) or a
choice being written (it feeds the token it drew last); both kinds step together, so a new
prompt joins at the next step and never stalls the rows already writing. A prompt read to its
end becomes `n` choice rows; a finished or cancelled row leaves at once.

    submit ─▶ queue ─▶ admit (state cache: the longest cached prefix) ─▶ rows ─▶ step ─▶ draw ─▶ events
                                                                          ▲                      │
                                                                          └──────────────────────┘

Prompts are read with the same fast step the choices are written with, one token at a time and
batched, and the step computes each row as it would alone: so a state taken from the cache is
exactly the state a cold read computes, a cache hit writes exactly what a miss writes, and a
request with a seed writes the same text alone or among many others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

from textgen.config import OptionError
from textgen.sampling import SampleText, choose_tokens, penalize_presence, resolve_seed, sample_stream
from textgen.serve.cache import CachedState, StateCache
from textgen.serve.metrics import ServeMetrics
from textgen.tokenizers import Tokenizer, end_marker

if TYPE_CHECKING:
    from textgen.api import TextModel

_log = logging.getLogger(__name__)
Item = TypeVar("Item")

# Retry-After never says less than this: a client that comes back at once finds the queue as full.
_MIN_RETRY_AFTER = 1.0
# While only prompts are being read, each engine step reads up to this many tokens of each in a
# tight loop: a cancelled prompt leaves within that many tokens rather than one.
_READ_AHEAD = 32
# The measured rate is a moving average over about this many steps.
_RATE_STEPS = 50
# Readers are woken at most this often while their text merely grows (a job's first text and every
# end go at once): each wake is a thread switch and a turn of the GIL, which cost as much as the
# step's own work for one row, and 50 hand-overs a second look as smooth as a thousand.
_HAND_OVER_SECONDS = 0.02


# --- what goes in and what comes out ------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One completion request, already checked and encoded by the caller (the HTTP layer)."""

    model: str  # a name given to Engine(models=...)
    prompt_ids: tuple[int, ...]  # prompt_ids() of textgen.sampling: unknown symbols already handled
    n: int = 1  # choices, each its own row and its own random stream (seed, index)
    max_tokens: int = 16  # tokens per choice; 0 with echo: scoring only
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()  # text stops; the stop text is not returned
    seed: int | None = None  # None: a fresh one
    logprobs: int | None = None  # None: none; 0..5: the chosen token's logprob and that many alternatives
    echo: bool = False  # first report the prompt's own tokens (with logprobs, the first has None)


@dataclass(frozen=True)
class TokenInfo:
    """One token of a choice, for logprobs."""

    token: str  # its text; part of a UTF-8 character as "bytes:\\xe4", as OpenAI writes it
    logprob: float | None
    top: dict[str, float]  # the top alternatives' texts -> logprobs (empty when logprobs is None or 0)
    offset: int  # character offset of the token in the choice's text (echo: in prompt + text)


@dataclass(frozen=True)
class Piece:
    """Text of one choice, safe to send: never half a UTF-8 character, never the start of a possible stop."""

    choice: int
    text: str
    tokens: tuple[TokenInfo, ...]


@dataclass(frozen=True)
class Finish:
    """The end of one choice. reason: "stop" | "length" | "cancelled"."""

    choice: int
    reason: str
    prompt_tokens: int
    completion_tokens: int


Event = Piece | Finish


class _Text:
    """A choice's text and tokens made since the last hand-over, joined into one Piece there (a
    Piece per token would be built and joined again at every step)."""

    __slots__ = ("choice", "texts", "tokens")

    def __init__(self, choice: int) -> None:
        self.choice = choice
        self.texts: list[str] = []
        self.tokens: list[TokenInfo] = []

    def piece(self) -> Piece:
        return Piece(self.choice, "".join(self.texts), tuple(self.tokens))


class Busy(Exception):
    """The queue is full or the engine is draining: come back in `retry_after` seconds."""

    def __init__(self, retry_after: float, reason: str = "the server is busy") -> None:
        super().__init__(f"{reason}; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class UnknownModel(Exception):
    """A Generation named a model the engine does not serve."""


class Job:
    """A submitted Generation: its events as they come, blocking (`for event in job`) or from an
    asyncio handler (`async for event in job`, or `listen`); iteration ends after every choice's Finish.

    The engine hands a job its events in batches, at the end of a step: its first text and every
    end at once, growing text at most every _HAND_OVER_SECONDS, each choice's text since the last
    batch as one Piece. A batch is one wake of a waiting thread, or one callback on an event loop
    for every job that loop listens to. Each wake costs a thread switch and a turn of the GIL,
    which the engine thread then waits for. How the text is cut into pieces is not part of what
    a seed fixes; the text, its tokens and the ends are.
    """

    def __init__(self, generation: Generation, seed: int) -> None:
        self.generation = generation
        self.seed = seed
        self.submitted = time.monotonic()
        self.cancelled = False
        self.started = False  # whether any of its events were handed over (the first goes at once)
        self._ready = threading.Condition()
        self._buffer: list[Event] = []
        self._listener: tuple[asyncio.AbstractEventLoop, Callable[[list[Event]], None]] | None = None

    def cancel(self) -> None:
        """Stop making this job's text: its rows leave the batch within one step."""
        self.cancelled = True

    def listen(self, loop: asyncio.AbstractEventLoop, receive: Callable[[list[Event]], None]) -> None:
        """Call `receive(events)` in `loop` (this call's own loop) with the events so far, then with
        each batch handed over. For a handler that reads many jobs at once without a task per job."""
        with self._ready:
            so_far, self._buffer = self._buffer, []
            self._listener = (loop, receive)
        if so_far:
            receive(so_far)

    def _hand_over(self, events: list[Event]) -> tuple[asyncio.AbstractEventLoop, Callable[[list[Event]], None]] | None:
        """Take a batch of events (from the engine thread): kept for a blocking reader, whom this
        wakes, or the listener they are for, which the engine calls on its loop."""
        with self._ready:
            if self._listener is None:
                self._buffer.extend(events)
                self._ready.notify()
            return self._listener

    def __iter__(self) -> Iterator[Event]:
        finished = 0
        while finished < self.generation.n:
            with self._ready:
                while not self._buffer:
                    self._ready.wait()
                events, self._buffer = self._buffer, []
            for event in events:
                finished += isinstance(event, Finish)
                yield event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        inbox: Inbox[Event] = Inbox()
        self.listen(asyncio.get_running_loop(), inbox.put)
        finished = 0
        while finished < self.generation.n:
            for event in await inbox.take():
                finished += isinstance(event, Finish)
                yield event


class Inbox(Generic[Item]):
    """Items handed to one asyncio loop in batches: `put` (in the loop) adds a batch, `take` waits
    for what has come. Cheaper than asyncio.Queue, whose every item is a put, a get and a wake."""

    def __init__(self) -> None:
        self._items: list[Item] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, items: list[Item]) -> None:
        self._items.extend(items)
        if self._waiter is not None:
            _end_wait(self._waiter)

    async def take(self, timeout: float | None = None) -> list[Item]:
        """Everything that has come, waiting for some if none has; empty after `timeout` seconds.
        (A timer that ends the wait, rather than asyncio.wait_for, which wraps every wait in more
        futures and callbacks: a stream waits once per hand-over.)"""
        if not self._items:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _end_wait, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        items, self._items = self._items, []
        return items


def _end_wait(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _failed(what: str, error: Exception) -> None:
    """One line in the server's log (the traceback only at debug level: the log is the user's)."""
    _log.error("error: %s: %s", what, error)
    _log.debug("the traceback of that error", exc_info=error)


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token's text as OpenAI's logprobs show it: part of a UTF-8 character as "bytes:\\xe4"."""
    raw = tokenizer.token_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


# --- the rows of a batch ------------------------------------------------------------------------


class _Reading:
    """A job whose prompt is being read, one token a step; it becomes the job's choices at the end."""

    def __init__(self, job: Job, start: int) -> None:
        self.job = job
        self.ids = job.generation.prompt_ids
        self.position = start  # the next prompt token to feed
        self.echoed: list[TokenInfo] = []

    def next_token(self) -> int:
        return self.ids[self.position]


class _Choice:
    """One choice of a job being written: its random stream, its text, what it has drawn."""

    def __init__(self, job: Job, index: int, tokenizer: Tokenizer, vocab: int, offset: int) -> None:
        generation = g = job.generation
        self.job, self.index, self.tokenizer = job, index, tokenizer
        # The settings that shape its draws (rows alike are drawn as one batch), and what each step reads.
        self.shaping = (g.greedy, g.temperature, g.top_k, g.top_p, g.repetition_penalty, g.presence_penalty,
                        g.frequency_penalty)
        self.max_tokens, self.logprobs = generation.max_tokens, generation.logprobs
        self.stream = sample_stream(job.seed, index)
        self.text = SampleText(tokenizer, None, generation.stop)
        self.offset = offset  # characters before this choice's text (the echoed prompt)
        self.drawn: list[int] = []
        self.infos: list[TokenInfo] = []  # tokens whose text is not sent yet
        self.seen = self.counts = None
        if generation.repetition_penalty != 1.0:  # as the sampler: the prompt's tokens count
            self.seen = torch.zeros(vocab, dtype=torch.bool)
            self.seen[torch.tensor(generation.prompt_ids)] = True
        if generation.presence_penalty or generation.frequency_penalty:
            self.counts = torch.zeros(vocab)

    def next_token(self) -> int:
        return self.drawn[-1]

    def take(self, token: int, end_id: int | None) -> str:
        """Record a drawn token; the text it makes safe to send."""
        self.drawn.append(token)
        if self.seen is not None:
            self.seen[token] = True
            if end_id is not None:
                self.seen[end_id] = False  # every document needs its end
        if self.counts is not None:
            self.counts[token] += 1
        return self.text.feed(token)

    def position(self) -> int:
        """Characters of this choice's text so far (sent or held back), counting the echoed prompt."""
        return self.offset + self.text.emitted + len(self.text.pending)


Row = _Reading | _Choice


class _StateRows:
    """A step's state seen as a list of tensors with the batch along one dimension, whatever the
    step (FastStep: per layer, (batch, hidden) parts; ModuleStep: (layers, batch, hidden) parts)."""

    def __init__(self, step: Any, model: Any) -> None:
        zero = step.from_model_state(model.init_state(1), 1)
        self.fast = isinstance(zero, list)
        self.dim = 0 if self.fast else 1
        self.sizes = [len(layer) for layer in zero] if self.fast else []  # the counts' entry may be shorter
        self.zero = tuple(self.parts(zero))

    def parts(self, state: Any) -> list[torch.Tensor]:
        if self.fast:
            return [part for layer in state for part in layer]
        return [state] if isinstance(state, torch.Tensor) else list(state)

    def state(self, parts: list[torch.Tensor]) -> Any:
        if self.fast:
            layers, start = [], 0
            for size in self.sizes:
                layers.append(tuple(parts[start : start + size]))
                start += size
            return layers
        return parts[0] if len(parts) == 1 else tuple(parts)

    def kept(self, length: int, parts: list[torch.Tensor], index: int, logits: torch.Tensor) -> CachedState:
        """One row's state and next-token logits, for the cache: copies in one allocation of their
        own (see CachedState.packed)."""
        pieces = [part.narrow(self.dim, index, 1) for part in parts] + [logits]
        if any(piece.dtype != logits.dtype for piece in pieces):
            return CachedState(length, tuple(piece.clone() for piece in pieces[:-1]), logits.clone())
        return CachedState.packed(length, pieces)

    def gather(self, parts: list[torch.Tensor] | None, rows: list[int],
               joining: list[tuple[torch.Tensor, ...]]) -> list[torch.Tensor] | None:
        """The parts of `rows` of the batch (repeats allowed), then the joining rows' parts."""
        if not rows and not joining:
            return None
        pieces: list[list[torch.Tensor]] = [[] for _ in self.zero]
        if rows:
            index = torch.tensor(rows, dtype=torch.long, device=parts[0].device)
            for kept, part in zip(pieces, parts):
                kept.append(part.index_select(self.dim, index))
        for row in joining:
            for kept, part in zip(pieces, row):
                kept.append(part)
        return [torch.cat(kept, dim=self.dim) for kept in pieces]


class _Lane:
    """The batch of one model's rows, with the model's step; a replaced model's lane finishes its
    rows on the old weights while a new lane takes new requests."""

    def __init__(self, name: str, version: int, text_model: TextModel, metrics: ServeMetrics) -> None:
        self.name, self.key = name, (name, version)
        self.tokenizer = text_model.tokenizer
        self.step = text_model.step
        self.layout = _StateRows(self.step, text_model.model)
        self.vocab = text_model.model.config.vocab_size
        self.end_id = end_marker(self.tokenizer)
        self.banned = self.tokenizer.unk_id
        self.tokens_generated = metrics.tokens_generated.labels(model=name)
        self.rows: list[Row] = []
        self.parts: list[torch.Tensor] | None = None  # the rows' state
        self.reserved = 0  # rows its jobs hold or will hold once their prompts are read
        # Rows that enter at the next step, with their states; jobs whose whole prompt was cached
        # (their choices draw from the cached logits, then enter).
        self.joining: list[tuple[Row, tuple[torch.Tensor, ...]]] = []
        self.ready: list[tuple[Job, CachedState]] = []

    def __bool__(self) -> bool:
        return bool(self.rows or self.joining or self.ready)


# --- the engine ---------------------------------------------------------------------------------


class Engine:
    """Continuous batching over one thread: see the module's docstring.

    `max_batch` rows active at most (a job holds `n` from admission on), `max_queue` jobs waiting;
    beyond, submit raises Busy. `state_cache_mb` bounds the state cache.
    """

    def __init__(self, models: Mapping[str, TextModel], *, max_batch: int, max_queue: int,
                 state_cache_mb: float, metrics: ServeMetrics | None = None) -> None:
        self.max_batch, self.max_queue = max_batch, max_queue
        self.metrics = metrics or ServeMetrics()
        self.cache = StateCache(state_cache_mb)
        self._models = dict(models)
        self._versions = {name: 0 for name in self._models}
        self._lanes = {name: _Lane(name, 0, model, self.metrics) for name, model in self._models.items()}
        self._retired: list[_Lane] = []
        self._queue: deque[Job] = deque()
        self._swaps: deque[tuple[str, Any]] = deque()
        self._wake = threading.Condition()
        self._accepting, self._stopping, self._cancel_all = True, False, False
        self._thread: threading.Thread | None = None
        self._rate = 0.0  # tokens drawn per second, a moving average over steps
        # Events not handed over yet, a choice's pieces joined; handed over at the end of a step
        # when one is a first piece or an end, or _HAND_OVER_SECONDS after the last hand-over.
        self._outbox: dict[Job, list[Event]] = {}
        self._urgent = False
        self._handed_at = 0.0
        # Events posted to an event loop that has not run its callback yet: the next step's join
        # them, so a loop that falls behind is woken once for several steps (each wake is a write
        # to its socket pair and a turn of the GIL).
        self._unread: dict[asyncio.AbstractEventLoop, list[tuple[Job, Callable[[list[Event]], None], list[Event]]]] = {}
        self._unread_lock = threading.Lock()

    # --- the caller's side (any thread) ---

    def start(self) -> None:
        """Start the engine thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="textgen-engine", daemon=True)
            self._thread.start()

    def submit(self, generation: Generation) -> Job:
        """Queue a generation; never blocks. Raises Busy (queue full, or draining) and UnknownModel."""
        if generation.model not in self._models:
            raise UnknownModel(f"no model named {generation.model!r}; the models are {', '.join(sorted(self._models))}")
        if not 1 <= generation.n <= self.max_batch:
            raise OptionError("n", f"must be between 1 and {self.max_batch} (the rows of a batch), got {generation.n}")
        if not generation.prompt_ids:
            raise OptionError("prompt", "must be at least one token")
        with self._wake:
            if not self._accepting:
                raise Busy(self._retry_after(), "the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise Busy(self._retry_after())
            job = Job(generation, resolve_seed(generation.seed))
            self._queue.append(job)
            self.metrics.queue_depth.set(len(self._queue))
            self._wake.notify()
        return job

    def replace_model(self, name: str, model: TextModel) -> None:
        """Serve `model` under `name` from the next step on. Rows already running finish on the old
        weights (their state was computed by them); requests admitted after the swap use the new."""
        if name not in self._models:
            raise UnknownModel(f"no model named {name!r}")
        with self._wake:
            self._swaps.append((name, model))
            self._wake.notify()

    def drain(self, timeout: float) -> None:
        """Stop accepting (submit raises Busy), let running jobs finish for up to `timeout` seconds,
        finish the rest with reason "cancelled", and stop the thread."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._accepting = False
            self._wake.notify_all()
            while not self._idle() and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 0.05))
            self._cancel_all = self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:  # never started: the queued jobs still get their ends
            self._cancel_everything()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def active_rows(self) -> int:
        return sum(len(lane.rows) for lane in self._all_lanes())

    @property
    def tokens_per_second(self) -> float:
        return self._rate

    def _retry_after(self) -> float:
        """Seconds until the queue has likely moved: the waiting tokens over the measured rate."""
        waiting = sum(job.generation.n * max(job.generation.max_tokens, 1) for job in self._queue)
        if self._rate <= 0:
            return _MIN_RETRY_AFTER
        return max(_MIN_RETRY_AFTER, waiting / self._rate)

    # --- the engine thread ---

    def _all_lanes(self) -> list[_Lane]:
        return [*self._lanes.values(), *self._retired]

    def _idle(self) -> bool:
        return not self._queue and not any(self._all_lanes())

    def _run(self) -> None:
        # Grad mode is per thread: off here once, rather than switched around every step.
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                self._wake.wait_for(lambda: not self._idle() or self._swaps or self._stopping)
                if self._stopping and (self._cancel_all or self._idle()):
                    break
                self._swap_models()
            self._admit()
            for lane in self._all_lanes():
                if lane:
                    self._guarded_step(lane)
            self._retired = [lane for lane in self._retired if lane]
            self._post(now=self._idle())
            self.metrics.batch_rows.set(self.active_rows)
            with self._wake:
                self._wake.notify_all()  # drain() waits for idleness
        self._cancel_everything()
        self.metrics.batch_rows.set(0)

    def _swap_models(self) -> None:
        while self._swaps:
            name, model = self._swaps.popleft()
            try:
                lane = _Lane(name, self._versions[name] + 1, model, self.metrics)
            except Exception as error:  # noqa: BLE001 - a model that cannot be stepped leaves the old one serving
                _failed(f"model {name} could not be swapped in; the old weights go on serving", error)
                continue
            old = self._lanes[name]
            self.cache.drop(old.key)
            self._versions[name] += 1
            self._models[name], self._lanes[name] = model, lane
            if old:
                self._retired.append(old)

    def _cancel_everything(self) -> None:
        with self._wake:
            queued, self._queue = list(self._queue), deque()
        for job in queued:
            self._finish_unstarted(job)
        for lane in self._all_lanes():
            for row in [*lane.rows, *(row for row, _ in lane.joining)]:
                row.job.cancel()
            for job, _ in lane.ready:
                job.cancel()
            self._leave_cancelled(lane)
        self._post(now=True)
        self.metrics.queue_depth.set(0)

    def _send(self, job: Job, event: Finish) -> None:
        """An end for the next hand-over (from the engine thread), which it makes due."""
        events = self._outbox.get(job)
        if events is None:
            self._outbox[job] = [event]
        else:
            events.append(event)
        self._urgent = True

    def _send_text(self, job: Job, choice: int, text: str, tokens: list[TokenInfo] | tuple[TokenInfo, ...]) -> None:
        """Text of a choice for the next hand-over, after the choice's text not handed over yet;
        a job's first text makes the hand-over due."""
        events = self._outbox.get(job)
        if events is None:
            events = self._outbox[job] = []
        last = events[-1] if events else None
        if type(last) is not _Text or last.choice != choice:
            last = _Text(choice)
            events.append(last)
        last.texts.append(text)
        last.tokens.extend(tokens)
        if not job.started:
            self._urgent = True

    def _post(self, now: bool = False) -> None:
        """Hand over the events so far, if due (see _outbox) or `now`: each job's at once, one
        callback per listening event loop."""
        if not self._outbox or not (now or self._urgent or time.monotonic() - self._handed_at >= _HAND_OVER_SECONDS):
            return
        outbox, self._outbox, self._urgent, self._handed_at = self._outbox, {}, False, time.monotonic()
        calls: dict[asyncio.AbstractEventLoop, list[tuple[Job, Callable[[list[Event]], None], list[Event]]]] = {}
        for job, items in outbox.items():
            job.started = True
            events = [item.piece() if type(item) is _Text else item for item in items]
            listener = job._hand_over(events)
            if listener is not None:
                loop, receive = listener
                calls.setdefault(loop, []).append((job, receive, events))
        for loop, listened in calls.items():
            if loop.is_closed():
                self._drop_unread(loop, listened)
                continue
            with self._unread_lock:
                unread = self._unread.get(loop)
                if unread is not None:
                    unread.extend(listened)
                    continue
                self._unread[loop] = listened
            try:
                loop.call_soon_threadsafe(self._call_listeners, loop)
            except RuntimeError:  # closed meanwhile
                self._drop_unread(loop, listened)

    def _drop_unread(self, loop: asyncio.AbstractEventLoop, listened: list[tuple[Job, Any, Any]]) -> None:
        """A closed loop's handlers read nothing any more: their jobs are cancelled."""
        with self._unread_lock:
            unread = self._unread.pop(loop, [])
        for job, _, _ in [*unread, *listened]:
            job.cancel()

    def _call_listeners(self, loop: asyncio.AbstractEventLoop) -> None:
        """The events posted to `loop` so far, handed to their listeners (run in that loop)."""
        with self._unread_lock:
            calls = self._unread.pop(loop)
        for _, receive, events in calls:
            receive(events)

    def _finish_unstarted(self, job: Job) -> None:
        for index in range(job.generation.n):
            self._send(job, Finish(index, "cancelled", len(job.generation.prompt_ids), 0))

    def _admit(self) -> None:
        """Move queued jobs into their lanes while their rows fit in the batch."""
        while True:
            with self._wake:
                if not self._queue:
                    break
                job = self._queue[0]
                lane = self._lanes[job.generation.model]
                if not job.cancelled and self._reserved() + job.generation.n > self.max_batch:
                    break
                self._queue.popleft()
                self.metrics.queue_depth.set(len(self._queue))
            if job.cancelled:
                self._finish_unstarted(job)
                continue
            lane.reserved += job.generation.n
            try:
                self._join(lane, job)
            except Exception as error:  # noqa: BLE001 - one request that cannot start must not stop the server
                _failed(f"a request for model {lane.name} could not start; it is cancelled", error)
                self._cancel_reading(lane, job)

    def _reserved(self) -> int:
        return sum(lane.reserved for lane in self._all_lanes())

    def _join(self, lane: _Lane, job: Job) -> None:
        """The job's first row: its prompt from the longest cached prefix on, or all of it cached."""
        generation = job.generation
        scoring = generation.echo and generation.logprobs is not None  # needs every prompt position
        cached = None if scoring else self.cache.longest_prefix(lane.key, generation.prompt_ids)
        (self.metrics.cache_hits if cached is not None else self.metrics.cache_misses).inc()
        if cached is not None and cached.length == len(generation.prompt_ids):
            lane.ready.append((job, cached))
        elif cached is not None:
            lane.joining.append((_Reading(job, cached.length), cached.state))
        else:
            lane.joining.append((_Reading(job, 0), lane.layout.zero))

    # --- one step of a lane ---

    def _guarded_step(self, lane: _Lane) -> None:
        """A step; should it fail, its jobs end as cancelled and the engine goes on with the others."""
        try:
            self._step(lane)
        except Exception as error:  # noqa: BLE001 - one broken batch must not stop the server
            _failed(f"a step of model {lane.name} failed; its requests are cancelled", error)
            for row in [*lane.rows, *(row for row, _ in lane.joining)]:
                row.job.cancel()
            for job, _ in lane.ready:
                job.cancel()
            self._leave_cancelled(lane)

    def _step(self, lane: _Lane) -> None:
        started = time.perf_counter()
        self._leave_cancelled(lane)
        for job, cached in lane.ready:  # whole prompt cached: draw the first tokens now
            choices = self._choices(lane, job, None)
            if choices:
                logits = cached.logits.unsqueeze(0).expand(len(choices), -1)
                alive = self._write(lane, choices, logits)
                lane.joining.extend((choice, cached.state) for choice in alive)
        lane.ready = []
        if lane.joining:
            lane.parts = lane.layout.gather(lane.parts, list(range(len(lane.rows))),
                                            [state for _, state in lane.joining])
            lane.rows = [*lane.rows, *(row for row, _ in lane.joining)]
            lane.joining = []
        if not lane.rows:
            return
        self._read_ahead(lane)
        tokens = torch.tensor([row.next_token() for row in lane.rows], device=lane.parts[0].device)
        logits, state = lane.step(tokens, lane.layout.state(lane.parts))
        parts = lane.layout.parts(state)
        kept: list[int] = []  # the stepped rows that go on, in order (a read prompt's row n times)
        rows: list[Row] = []
        writing: list[_Choice] = []
        sources: list[int] = []  # each writing choice's row in the stepped batch
        for index, row in enumerate(lane.rows):
            if isinstance(row, _Choice):
                writing.append(row)
                sources.append(index)
            elif self._read(lane, row, logits[index]):
                kept.append(index)
                rows.append(row)
            else:  # the prompt is read: keep its state, and its choices draw their first tokens
                self.cache.put(lane.key, row.ids, lane.layout.kept(len(row.ids), parts, index, logits[index]))
                for choice in self._choices(lane, row.job, row):
                    writing.append(choice)
                    sources.append(index)
        if writing:
            in_order = sources == list(range(len(lane.rows)))
            chosen = logits if in_order else logits.index_select(0, torch.tensor(sources, device=logits.device))
            alive = set(map(id, self._write(lane, writing, chosen, parts, sources)))
            for choice, index in zip(writing, sources):
                if id(choice) in alive:
                    kept.append(index)
                    rows.append(choice)
        lane.parts = parts if kept == list(range(len(lane.rows))) else lane.layout.gather(parts, kept, [])
        lane.rows = rows
        if writing:
            elapsed = time.perf_counter() - started
            self.metrics.token_latency.observe(elapsed)
            weight = 1.0 / _RATE_STEPS
            rate = len(writing) / max(elapsed, 1e-9)
            self._rate = rate if self._rate == 0 else (1 - weight) * self._rate + weight * rate

    def _read_ahead(self, lane: _Lane) -> None:
        """While every row is reading a prompt (nobody waits for a token), read up to _READ_AHEAD
        tokens of each in a tight loop, short of any prompt's last token, which the ordinary step
        reads. The same step on the same rows: the same numbers, without the engine's work per step."""
        if not all(isinstance(row, _Reading) and not (row.job.generation.echo and row.job.generation.logprobs
                                                      is not None) for row in lane.rows):
            return
        ahead = min(_READ_AHEAD, *(len(row.ids) - row.position - 1 for row in lane.rows))
        if ahead <= 0:
            return
        device = lane.parts[0].device
        columns = torch.tensor([row.ids[row.position : row.position + ahead] for row in lane.rows], device=device).t()
        state = lane.layout.state(lane.parts)
        for tokens in columns:
            state = lane.step.advance(tokens.contiguous(), state)
        lane.parts = lane.layout.parts(state)
        for row in lane.rows:
            row.position += ahead

    def _read(self, lane: _Lane, reading: _Reading, logits: torch.Tensor) -> bool:
        """Note that a prompt token was fed; whether the prompt still has tokens to read."""
        reading.position += 1
        generation = reading.job.generation
        if reading.position < len(reading.ids) and generation.echo and generation.logprobs is not None:
            reading.echoed.append(self._logprob(lane, logits, reading.ids[reading.position], generation.logprobs))
        return reading.position < len(reading.ids)

    def _choices(self, lane: _Lane, job: Job, reading: _Reading | None) -> list[_Choice]:
        """The job's choices once its prompt is read, after the echoed prompt if asked; with
        max_tokens 0, the job ends here."""
        generation = job.generation
        offset = 0
        if generation.echo:
            text, infos = self._echo(lane, generation, reading.echoed if reading else [])
            offset = len(text)
            for index in range(generation.n):
                self._send_text(job, index, text, infos)
        if generation.max_tokens == 0:
            for index in range(generation.n):
                self._send(job, Finish(index, "length", len(generation.prompt_ids), 0))
            lane.reserved -= generation.n
            return []
        return [_Choice(job, index, lane.tokenizer, lane.vocab, offset) for index in range(generation.n)]

    def _echo(self, lane: _Lane, generation: Generation,
              scored: list[tuple[float, dict[str, float]]]) -> tuple[str, tuple[TokenInfo, ...]]:
        """The prompt's text and, with logprobs, its tokens (the first has no logprob)."""
        text = SampleText(lane.tokenizer, None, ())
        infos = []
        for position, token in enumerate(generation.prompt_ids):
            offset = text.emitted + len(text.pending)
            text.feed(token)
            if generation.logprobs is not None:
                logprob, top = scored[position - 1] if position > 0 else (None, {})
                infos.append(TokenInfo(token_text(lane.tokenizer, token), logprob, top, offset))
        text.finish()
        return lane.tokenizer.decode(generation.prompt_ids), tuple(infos)

    def _logprob(self, lane: _Lane, logits: torch.Tensor, token: int, top: int) -> tuple[float, dict[str, float]]:
        """The model's own log-probability of `token` (before any shaping) and the `top` likeliest."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        alternatives: dict[str, float] = {}
        if top > 0:
            best = torch.topk(logprobs, min(top, logprobs.shape[-1]))
            for value, index in zip(best.values.tolist(), best.indices.tolist()):
                alternatives.setdefault(token_text(lane.tokenizer, index), value)
        return float(logprobs[token]), alternatives

    def _write(self, lane: _Lane, choices: list[_Choice], logits: torch.Tensor,
               parts: list[torch.Tensor] | None = None, sources: list[int] | None = None) -> list[_Choice]:
        """Draw each choice's next token from its row of `logits`, send its text; the choices still
        writing. `parts` and `sources` (each choice's row in them): the state, for the cache."""
        tokens = self._draw(lane, choices, logits)
        alive = []
        now = time.monotonic()
        end_id = lane.end_id
        for position, (choice, token) in enumerate(zip(choices, tokens)):
            if choice.logprobs is not None:
                logprob, top = self._logprob(lane, logits[position], token, choice.logprobs)
                choice.infos.append(TokenInfo(token_text(lane.tokenizer, token), logprob, top, choice.position()))
            text = choice.take(token, end_id)
            if len(choice.drawn) == 1 and choice.index == 0:
                self.metrics.time_to_first_token.observe(now - choice.job.submitted)
            if text:
                self._send_text(choice.job, choice.index, text, choice.infos)
                if choice.infos:
                    choice.infos = []
            if not choice.text.finished and len(choice.drawn) < choice.max_tokens:
                alive.append(choice)
                continue
            self._finish(lane, choice, logits, position, parts, sources)
        lane.tokens_generated.inc(len(choices))
        return alive

    def _finish(self, lane: _Lane, choice: _Choice, logits: torch.Tensor, position: int,
                parts: list[torch.Tensor] | None, sources: list[int] | None) -> None:
        """A choice at its stop or its length: its held-back text, its Finish, its state cached."""
        tail = choice.text.finish()
        if tail:
            self._send_text(choice.job, choice.index, tail, choice.infos)
        self._end(lane, choice, "stop" if choice.text.stopped else "length")
        if parts is not None and sources is not None and len(choice.drawn) > 1:
            # The state has read the prompt and all but the newest token, as a next turn would.
            read = (*choice.job.generation.prompt_ids, *choice.drawn[:-1])
            self.cache.put(lane.key, read, lane.layout.kept(len(read), parts, sources[position], logits[position]))

    def _draw(self, lane: _Lane, choices: list[_Choice], logits: torch.Tensor) -> list[int]:
        """The next token of each choice; choices with the same settings are shaped as one batch."""
        shaping = choices[0].shaping
        if all(choice.shaping == shaping for choice in choices):
            return self._draw_group(lane, choices, logits)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for position, choice in enumerate(choices):
            groups.setdefault(choice.shaping, []).append(position)
        tokens = [0] * len(choices)
        for positions in groups.values():
            rows = logits.index_select(0, torch.tensor(positions, device=logits.device))
            for position, token in zip(positions, self._draw_group(lane, [choices[p] for p in positions], rows)):
                tokens[position] = token
        return tokens

    def _draw_group(self, lane: _Lane, choices: list[_Choice], logits: torch.Tensor) -> list[int]:
        generation = choices[0].job.generation
        if choices[0].counts is not None:
            counts = torch.stack([choice.counts for choice in choices]).to(logits.device)
            logits = penalize_presence(logits.float(), counts, generation.presence_penalty,
                                       generation.frequency_penalty)
        seen = None
        if choices[0].seen is not None:
            seen = torch.stack([choice.seen for choice in choices]).to(logits.device)
        return choose_tokens(logits, generation, [choice.stream for choice in choices], seen, lane.banned)

    def _end(self, lane: _Lane, choice: _Choice, reason: str) -> None:
        generation = choice.job.generation
        self._send(choice.job, Finish(choice.index, reason, len(generation.prompt_ids), len(choice.drawn)))
        lane.reserved -= 1

    def _leave_cancelled(self, lane: _Lane) -> None:
        """Cancelled jobs' rows leave the batch (each choice gets its Finish)."""
        kept = []
        for index, row in enumerate(lane.rows):
            if not row.job.cancelled:
                kept.append(index)
            elif isinstance(row, _Choice):
                self._end(lane, row, "cancelled")
            else:
                self._cancel_reading(lane, row.job)
        if len(kept) < len(lane.rows):
            lane.parts = lane.layout.gather(lane.parts, kept, [])
            lane.rows = [lane.rows[index] for index in kept]
        joining = []
        for row, state in lane.joining:
            if row.job.cancelled:
                self._cancel_reading(lane, row.job)
            else:
                joining.append((row, state))
        lane.joining = joining
        ready = []
        for job, cached in lane.ready:
            if job.cancelled:
                self._cancel_reading(lane, job)
            else:
                ready.append((job, cached))
        lane.ready = ready

    def _cancel_reading(self, lane: _Lane, job: Job) -> None:
        self._finish_unstarted(job)
        lane.reserved -= job.generation.n
