"""The HTTP face of `textgen serve`: routes in OpenAI's wire shapes, streamed as server-sent events,
and every refusal as an OpenAI-shaped error with its status. Handlers only check, encode and queue
work on the engine (textgen/serve/engine.py) and send back what it makes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from textgen.config import ServeConfig, SettingError
from textgen.errors import TextgenError
from textgen.serve.schema import CompletionRequest, RequestError, from_setting_error, parse_chat, parse_completion

log = logging.getLogger("textgen.serve")
PAGE = Path(__file__).parent / "page" / "index.html"
KEEPALIVE_SECONDS = 10.0  # a comment line on a quiet stream, so proxies and clients keep it open
DISCONNECT_POLL_SECONDS = 0.25  # how often a whole (unstreamed) request looks for its client gone
RELOAD_POLL_SECONDS = 2.0  # how often --reload looks for a new save


@dataclass
class ServedModel:
    name: str
    path: Path
    text_model: Any  # textgen.api.TextModel
    fingerprint: str  # the weights' hash: the response's system_fingerprint
    created: int


@dataclass
class ServerState:
    """What the routes share: the models once loaded, the engine, and whether new work is taken."""

    config: ServeConfig
    checkpoints: dict[str, Path]
    metrics: Any = None
    engine: Any = None
    models: dict[str, ServedModel] = field(default_factory=dict)
    loaded: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    draining: bool = False

    def load(self) -> None:
        """Load every checkpoint and start the engine; a failure is kept for /health to report."""
        from textgen.api import load
        from textgen.serve.engine import Engine

        try:
            for name, path in self.checkpoints.items():
                self.models[name] = served_model(name, path, load(path))
            self.engine = Engine({name: served.text_model for name, served in self.models.items()},
                                 max_batch=self.config.max_batch, max_queue=self.config.max_queue,
                                 state_cache_mb=self.config.state_cache_mb, metrics=self.metrics)
            self.engine.start()
            self.loaded.set()
        except TextgenError as error:
            self.load_error = str(error)
            log.error("error: %s", error)
            return
        if self.config.reload:
            threading.Thread(target=self.watch, name="textgen-reload", daemon=True).start()

    def watch(self) -> None:
        """Swap in a checkpoint's weights whenever a run saves a new best into its folder (the
        atomic save shows a whole checkpoint or none); the engine swaps between steps."""
        from textgen.api import load
        from textgen.serve.threads import in_passing_thread

        seen = {name: saved_version(served.path) for name, served in self.models.items()}
        while not self.draining:
            time.sleep(RELOAD_POLL_SECONDS)
            for name, served in list(self.models.items()):
                version = saved_version(served.path)
                if version == seen[name]:
                    continue
                try:  # loaded in a thread that ends: see textgen/serve/threads.py
                    fresh = in_passing_thread(lambda: served_model(name, served.path, load(served.path)))
                except (TextgenError, OSError) as error:  # mid-save or damaged: keep serving the old one
                    log.warning("warning: not reloading %s: %s", name, error)
                    continue
                self.engine.replace_model(name, fresh.text_model)
                self.models[name], seen[name] = fresh, version
                log.warning("reloaded %s from %s", name, served.path)


def saved_version(folder: Path) -> tuple[int, ...]:
    """What changes when a checkpoint is saved again: its files' modification times."""
    try:
        return tuple(sorted(p.stat().st_mtime_ns for p in Path(folder).iterdir() if p.is_file()))
    except OSError:
        return ()


def served_model(name: str, path: Path, text_model: Any) -> ServedModel:
    from textgen.checkpoint import CONFIG_FILE

    weights = sorted(p for p in Path(path).iterdir() if p.suffix == ".safetensors" and "trainer" not in p.name)
    digest = hashlib.sha256()
    for file in weights:
        digest.update(file.read_bytes())
    created = int((Path(path) / CONFIG_FILE).stat().st_mtime)
    return ServedModel(name, Path(path), text_model, "fp_" + digest.hexdigest()[:12], created)


def create_app(checkpoints: Mapping[str, Path], config: ServeConfig) -> FastAPI:
    """The ASGI app serving `checkpoints` (name -> folder). The models load in the background once
    it starts (/health answers 503 until then); the engine drains when it stops."""
    from textgen.serve.metrics import ServeMetrics

    state = ServerState(config, {name: Path(path) for name, path in checkpoints.items()}, ServeMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="textgen-load", daemon=True).start()
        yield
        state.draining = True
        if state.engine is not None:
            await asyncio.to_thread(state.engine.drain, 0.0)

    app = FastAPI(title="textgen", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.textgen = state
    _add_error_handlers(app, state)
    _add_routes(app, state)
    return app


# --- errors ------------------------------------------------------------------------------------

def error_response(error: RequestError) -> JSONResponse:
    body = {"error": error.wire()}
    headers = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _add_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404:
            return error_response(RequestError(f"no route {request.method} {request.url.path}; the API is "
                                               "under /v1 (see GET /v1/models)", None, 404, code="not_found"))
        return error_response(RequestError(str(error.detail), None, error.status_code))

    app.add_middleware(Guard, state=state)


class Guard:
    """Around every request: the body's size and the key checked first, the answer counted by
    route and status, and a failure of textgen's own turned into a 500 and one log line (never a
    traceback, in the answer or the log)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request, status = Request(scope), 500
        started = False

        async def send_counted(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            _check_size(request, self.state.config)
            _check_key(request, self.state.config)
            await self.app(scope, receive, send_counted)
        except RequestError as error:
            await error_response(error)(scope, receive, send_counted)
        except Exception as error:  # noqa: BLE001 - the one place a bug of textgen's is caught
            log.error("error: %s on %s %s: %s", type(error).__name__, request.method, request.url.path, error)
            if not started:
                failure = RequestError("the server failed on this request", None, 500, "server_error")
                await error_response(failure)(scope, receive, send_counted)
        route = scope.get("route")
        self.state.metrics.requests.labels(route=getattr(route, "path", "unmatched"), status=str(status)).inc()


def _check_size(request: Request, config: ServeConfig) -> None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > config.max_body:
        raise RequestError(f"the request body has {int(length):,} bytes; this server takes at most "
                           f"{config.max_body:,}", None, 413, code="body_too_large")


OPEN_PATHS = ("/", "/health", "/metrics", "/favicon.ico")


def _check_key(request: Request, config: ServeConfig) -> None:
    if config.api_key is None or request.url.path in OPEN_PATHS:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not given:
        raise RequestError("this server needs an API key: send the header Authorization: Bearer KEY", None, 401,
                           "authentication_error", "missing_api_key")
    if not hmac.compare_digest(given.encode(), config.api_key.encode()):
        raise RequestError("the API key is not this server's", None, 401, "authentication_error", "invalid_api_key")


async def read_json(request: Request, config: ServeConfig) -> Any:
    """The body as JSON, read no further than max_body (a body sent without its length too)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body:
                raise RequestError(f"the request body is over {config.max_body:,} bytes, this server's limit",
                                   None, 413, code="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError("the request body was cut off before its end", None, 400) from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise RequestError("the request body is not valid JSON", None, 400) from None


# --- routes ------------------------------------------------------------------------------------

def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> JSONResponse:
        if state.load_error is not None:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        if not state.loaded.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok", "models": sorted(state.models)})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        _check_ready(state)
        return JSONResponse({"object": "list", "data": [model_card(served) for served in state.models.values()]})

    @app.post("/tokenize")
    async def tokenize(request: Request) -> JSONResponse:
        body = await read_json(request, state.config)
        served = _model_of(state, body)
        text = body.get("prompt", body.get("text"))
        if not isinstance(text, str):
            raise RequestError("prompt must be a text", "prompt")
        ids = _encode(served, text, body.get("unknown", "error"))
        tokenizer = served.text_model.tokenizer
        return JSONResponse({"model": served.name, "tokens": ids, "count": len(ids),
                             "pieces": [tokenizer.token_text(i) for i in ids]})

    @app.post("/detokenize")
    async def detokenize(request: Request) -> JSONResponse:
        body = await read_json(request, state.config)
        served = _model_of(state, body)
        ids, vocab = body.get("tokens"), served.text_model.tokenizer.vocab_size
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab
                                                for i in ids):
            raise RequestError(f"tokens must be a list of token ids from 0 to {vocab - 1}", "tokens")
        return JSONResponse({"model": served.name, "prompt": served.text_model.tokenizer.decode(ids)})

    _add_completion_routes(app, state)


def _add_completion_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_json(request, state.config)
        return await _complete(request, state, parse_completion(body, state.config), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read_json(request, state.config)
        return await _complete(request, state, parse_chat(body, state.config), chat=True)


def model_card(served: ServedModel) -> dict[str, Any]:
    """GET /v1/models' entry: OpenAI's fields, then what textgen knows of the model."""
    info, model = served.text_model.info, served.text_model.model
    return {
        "id": served.name, "object": "model", "created": served.created, "owned_by": "textgen",
        "tokenizer": info.tokenizer.kind if info else None,
        "cell": info.model.cell if info else None,
        "layers": info.model.layers if info else None,
        "hidden_size": info.model.hidden_size if info else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_bits_per_char": info.best.val_bits_per_char if info else None,
        "fingerprint": served.fingerprint,
    }


def _check_ready(state: ServerState) -> None:
    if state.draining:
        raise RequestError("the server is shutting down", None, 503, "server_error", "shutting_down", 5)
    if not state.loaded.is_set():
        raise RequestError("the models are still loading", None, 503, "server_error", "loading", 1)


def _model_of(state: ServerState, body: Any) -> ServedModel:
    _check_ready(state)
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    name = body.get("model")
    if name not in state.models:
        served = ", ".join(sorted(state.models))
        raise RequestError(f"the model {name!r} is not served here; the models are: {served}", "model", 404,
                           code="model_not_found")
    return state.models[name]


def _encode(served: ServedModel, text: str, unknown: Any) -> list[int]:
    from textgen.sampling import prompt_ids

    try:
        return prompt_ids(served.text_model.tokenizer, text, unknown)
    except SettingError as error:
        raise from_setting_error(error) from None


# --- completions -------------------------------------------------------------------------------

async def _complete(request: Request, state: ServerState, asked: CompletionRequest, chat: bool) -> Response:
    from textgen.serve.engine import Busy

    served = _model_of(state, {"model": asked.model})
    generations = [_generation(served, asked, prompt) for prompt in asked.prompts]
    jobs: list[Any] = []
    try:
        for generation in generations:
            jobs.append(state.engine.submit(generation))
    except (Busy, SettingError) as refused:
        for job in jobs:
            job.cancel()
        if isinstance(refused, SettingError):
            raise from_setting_error(refused) from None
        seconds = max(1, math.ceil(refused.retry_after))
        raise RequestError(f"{refused}", None, 503, "server_error", "server_busy", seconds) from None
    reply = Reply(asked, served, chat, len(asked.prompts) * asked.sample.num_samples)
    if asked.stream:
        return StreamingResponse(_sse(reply, jobs, state), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    watcher = asyncio.create_task(_cancel_when_gone(request, jobs))
    try:
        async for prompt_index, event in merged(jobs):
            reply.take(prompt_index, event)
    finally:
        gone = watcher.done()  # the client went away: its jobs were cancelled for it
        watcher.cancel()
        for job in jobs:
            job.cancel()
    if reply.cut and not gone:
        raise cut_short(state)
    return JSONResponse(reply.whole())


def cut_short(state: ServerState) -> RequestError:
    """Why a completion was ended before its stop or its length: the server shutting down (its
    drain timeout passed), or a step that failed. Not a finish_reason: OpenAI's are stop and
    length, and a client must not take a cut text for a whole one."""
    if state.draining:
        return RequestError("the server is shutting down: the completion was cut short", None, 503,
                            "server_error", "shutting_down", 5)
    return RequestError("the completion could not be finished (the server's log says why)", None, 500,
                        "server_error", "server_error")


def _generation(served: ServedModel, asked: CompletionRequest, prompt: str) -> Any:
    from textgen.serve.engine import Generation

    sample = asked.sample
    return Generation(
        model=served.name, prompt_ids=tuple(_encode(served, prompt, sample.unknown)), n=sample.num_samples,
        max_tokens=asked.max_tokens, temperature=sample.temperature, top_k=sample.top_k, top_p=sample.top_p,
        greedy=sample.greedy, repetition_penalty=sample.repetition_penalty,
        presence_penalty=asked.presence_penalty, frequency_penalty=asked.frequency_penalty,
        stop=sample.stop, seed=sample.seed, logprobs=asked.logprobs, echo=asked.echo)


async def _cancel_when_gone(request: Request, jobs: list[Any]) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
    for job in jobs:
        job.cancel()


async def merged(jobs: list[Any], keepalive: float | None = None) -> AsyncIterator[tuple[int, Any]]:
    """Every job's events as they come, tagged with the job's place; (−1, None) after `keepalive`
    seconds without one."""
    async for arrived in arrivals(jobs, keepalive):
        if not arrived:
            yield -1, None
        for tagged in arrived:
            yield tagged


async def arrivals(jobs: list[Any], keepalive: float | None = None) -> AsyncIterator[list[tuple[int, Any]]]:
    """Every job's events, each batch of them as it arrives, tagged with the job's place; an empty
    batch after `keepalive` seconds without one. The engine's jobs hand their events to one inbox
    (no task, no queue item per event); any other async iterable of events is pumped by a task."""
    from textgen.serve.engine import Finish, Inbox, Job

    inbox: Inbox[tuple[int, Any]] = Inbox()
    done = object()
    loop = asyncio.get_running_loop()

    def receiver(index: int, job: Job) -> Callable[[list[Any]], None]:
        left = job.generation.n  # its choices' Finish events still to come

        def receive(events: list[Any]) -> None:
            nonlocal left
            tagged = [(index, event) for event in events]
            left -= sum(isinstance(event, Finish) for event in events)
            if left == 0:
                tagged.append((index, done))
            inbox.put(tagged)
        return receive

    async def pump(index: int, job: Any) -> None:
        try:
            async for event in job:
                inbox.put([(index, event)])
        finally:
            inbox.put([(index, done)])

    pumps = []
    for index, job in enumerate(jobs):
        if isinstance(job, Job):
            job.listen(loop, receiver(index, job))
        else:
            pumps.append(asyncio.create_task(pump(index, job)))
    running = len(jobs)
    try:
        while running:
            arrived = await inbox.take(keepalive)
            events = [(index, event) for index, event in arrived if event is not done]
            running -= len(arrived) - len(events)
            if events or not arrived:
                yield events
        for task in pumps:
            task.result()  # an engine failure reaches the handler, not the void
    finally:
        for task in pumps:
            task.cancel()


async def _sse(reply: "Reply", jobs: list[Any], state: ServerState) -> AsyncIterator[bytes]:
    """The stream: data lines in OpenAI's chunk shapes, a comment on long gaps, then [DONE]. The
    chunks of the events that arrived together go in one write (each write is a system call and
    wakes the client); the last ones with the usage and [DONE]. A completion cut short ends with
    an error event in OpenAI's shape instead, and no [DONE], which the openai client raises as
    APIError. The client going away cancels this generator, and so its jobs."""
    try:
        opening = b"".join(sse(chunk) for chunk in reply.opening_chunks())
        if opening:
            yield opening
        written = b""
        async for arrived in arrivals(jobs, KEEPALIVE_SECONDS):
            if not arrived:
                yield b": keep-alive\n\n"
                continue
            chunks = (reply.take(prompt_index, event) for prompt_index, event in arrived)
            written = b"".join(sse(chunk) for chunk in chunks if chunk is not None)
            if written and not reply.finished:  # the last chunks go with the end
                yield written
                written = b""
        if reply.cut:
            yield written + sse({"error": cut_short(state).wire()})
            return
        if reply.asked.include_usage:
            written += sse(reply.usage_chunk())
        yield written + b"data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class Reply:
    """One response being built from the engine's events: the whole one's choices, or each event
    as its chunk, in the completion or the chat shape."""

    def __init__(self, asked: CompletionRequest, served: ServedModel, chat: bool, choices: int) -> None:
        self.asked, self.served, self.chat = asked, served, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.texts = [""] * choices
        self.tokens: list[list[Any]] = [[] for _ in range(choices)]
        self.reasons: list[str | None] = [None] * choices
        self.prompt_tokens: dict[int, int] = {}
        self.completion_tokens = 0
        self.cut = False  # a choice was ended before its stop or its length

    def _header(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.served.name,
                "system_fingerprint": self.served.fingerprint}

    @property
    def finished(self) -> bool:
        """Whether every choice has its end."""
        return None not in self.reasons

    def take(self, prompt_index: int, event: Any) -> dict[str, Any] | None:
        """Record an event; the chunk that streams it (None for nothing to send)."""
        index = prompt_index * self.asked.sample.num_samples + event.choice
        if hasattr(event, "reason"):
            self.reasons[index] = event.reason
            self.prompt_tokens[prompt_index] = event.prompt_tokens
            self.completion_tokens += event.completion_tokens
            if event.reason == "cancelled":
                self.cut = True
                return None
            return self._chunk(index, "", (), event.reason)
        self.texts[index] += event.text
        self.tokens[index].extend(event.tokens)
        if not event.text and not event.tokens:
            return None
        return self._chunk(index, event.text, event.tokens, None)

    def opening_chunks(self) -> list[dict[str, Any]]:
        """Chat streams open each choice with its role, as OpenAI's do."""
        if not self.chat:
            return []
        return [self._with_usage({**self._header(True), "choices": [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})
            for i in range(len(self.texts))]

    def _chunk(self, index: int, text: str, tokens: Any, reason: str | None) -> dict[str, Any]:
        logprobs = self._logprobs(tokens) if self.asked.logprobs is not None and (tokens or not self.chat) else None
        if self.chat:
            choice = {"index": index, "delta": {"content": text} if text else {}, "logprobs": logprobs,
                      "finish_reason": reason}
        else:
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
        return self._with_usage({**self._header(True), "choices": [choice]})

    def _with_usage(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if self.asked.include_usage:
            chunk["usage"] = None  # as OpenAI: present on every chunk, filled on the last
        return chunk

    def usage(self) -> dict[str, int]:
        prompt = sum(self.prompt_tokens.values())
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens}

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._header(True), "choices": [], "usage": self.usage()}

    def whole(self) -> dict[str, Any]:
        choices = []
        for index, text in enumerate(self.texts):
            logprobs = self._logprobs(self.tokens[index]) if self.asked.logprobs is not None else None
            if self.chat:
                choices.append({"index": index, "message": {"role": "assistant", "content": text},
                                "logprobs": logprobs, "finish_reason": self.reasons[index]})
            else:
                choices.append({"index": index, "text": text, "logprobs": logprobs,
                                "finish_reason": self.reasons[index]})
        return {**self._header(False), "choices": choices, "usage": self.usage()}

    def _logprobs(self, tokens: Any) -> dict[str, Any]:
        if self.chat:
            return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                                 "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())}
                                                  for k, v in t.top.items()]} for t in tokens]}
        return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [dict(t.top) for t in tokens], "text_offset": [t.offset for t in tokens]}
