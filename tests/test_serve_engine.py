"""Tests for textgen.serve.engine without HTTP: a seeded request writes the same text alone or
among many, the same as TextModel.generate_many, pieces that never split a character or leak a
stop, n choices, logprobs and echo against the evaluator's scores, cancel, Busy, drain, the
state cache's hit against its miss, and a model replaced between steps."""

from __future__ import annotations

import asyncio
import codecs
import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import textgen
from textgen.api import TextModel
from textgen.config import CELLS, OptionError, TokenizerConfig
from textgen.evaluation.scoring import total_loss
from textgen.model import ModuleStep
from textgen.sampling import SampleText, prompt_ids
from textgen.serve import Busy, Engine, Finish, Generation, Piece, ServeMetrics, UnknownModel
from textgen.serve.engine import TokenInfo
from textgen.tokenizers import build_tokenizer


@contextmanager
def running(models: dict[str, TextModel], **limits) -> Iterator[Engine]:
    limits = {"max_batch": 64, "max_queue": 256, "state_cache_mb": 16, **limits}
    engine = Engine(models, **limits)
    engine.start()
    try:
        yield engine
    finally:
        engine.drain(timeout=5)


def texts(job) -> list[str]:
    """Each choice's whole text, from its streamed pieces."""
    out = [""] * job.generation.n
    for event in job:
        if isinstance(event, Piece):
            out[event.choice] += event.text
    return out


def events(job) -> list:
    return list(job)


def written(stream) -> tuple[dict[int, str], dict[int, list[TokenInfo]], list[Finish]]:
    """Each choice's text and tokens, and the ends, from a job or its events: what a job writes,
    however its pieces were grouped (the engine joins the pieces made between two hand-overs,
    which depend on timing)."""
    out: dict[int, str] = {}
    tokens: dict[int, list[TokenInfo]] = {}
    ends = []
    for event in stream:
        if isinstance(event, Piece):
            out[event.choice] = out.get(event.choice, "") + event.text
            tokens.setdefault(event.choice, []).extend(event.tokens)
        else:
            ends.append(event)
    return out, tokens, ends


def request(model: TextModel, prompt: str, **fields) -> Generation:
    return Generation("m", tuple(prompt_ids(model.tokenizer, prompt)), **fields)


def wait_for(condition, timeout: float = 20.0) -> bool:
    """Poll until `condition()` holds (the engine thread updates the metrics after its step)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


SETTINGS = [
    dict(temperature=0.8, top_k=40),
    dict(temperature=1.3, top_p=0.9),
    dict(greedy=True),
    dict(temperature=1.0, top_k=0, repetition_penalty=1.3),
]


# --- the same text whatever the company ------------------------------------------------------------


def test_a_seeded_request_writes_the_same_text_and_logprobs_alone_and_among_63_others(model):
    target = request(model, "The keeper", max_tokens=60, seed=11, temperature=0.9, top_k=20, logprobs=3)
    with running({"m": model}) as engine:
        alone = written(engine.submit(target))
        others = [engine.submit(request(model, "He had done it", max_tokens=80, seed=seed, **SETTINGS[seed % 4]))
                  for seed in range(63)]
        among = written(engine.submit(target))
        for job in others:
            events(job)
    assert alone == among
    assert alone[0][0] and len(alone[1][0]) == 60


@pytest.mark.parametrize("shaping", SETTINGS, ids=lambda s: "-".join(s))
def test_the_engine_writes_what_generate_many_writes_for_a_char_model(model, shaping):
    with running({"m": model}) as engine:
        written = texts(engine.submit(request(model, "The lamp", n=3, max_tokens=50, seed=4, **shaping)))
    assert written == model.generate_many("The lamp", num_samples=3, length=50, seed=4, **shaping)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_kind_with_two_layers_and_skips_is_served_as_the_sampler_serves_it(model, make_model, cell):
    stacked = TextModel(make_model(model.tokenizer.vocab_size, cell, layers=2, skip_connections=True),
                        model.tokenizer)
    with running({"m": stacked}) as engine:
        job = engine.submit(request(model, "The lamp", n=3, max_tokens=30, seed=3, temperature=0.9, top_k=20))
        written = texts(job)
    assert written == stacked.generate_many("The lamp", num_samples=3, length=30, seed=3, temperature=0.9, top_k=20)


def test_a_document_models_choice_ends_at_the_end_marker_as_a_stop(prose, make_model):
    tokenizer = build_tokenizer(TokenizerConfig(kind="char", documents="lines", min_count=1), prose)
    documents = TextModel(make_model(tokenizer.vocab_size, seed=2), tokenizer)
    with running({"m": documents}) as engine:
        job = engine.submit(request(documents, "The", n=8, max_tokens=400, seed=1, temperature=1.5))
        written = events(job)
    finishes = [event for event in written if isinstance(event, Finish)]
    choices = [""] * 8
    for event in written:
        if isinstance(event, Piece):
            choices[event.choice] += event.text
    assert choices == documents.generate_many("The", num_samples=8, length=400, seed=1, temperature=1.5, top_k=0)
    assert "stop" in {finish.reason for finish in finishes}  # some documents ended before 400 tokens


def test_a_model_run_by_the_module_step_is_served_as_the_sampler_serves_it(model):
    fallback = TextModel(model.model, model.tokenizer)
    fallback._step = ModuleStep(model.model)  # what make_step gives a model the fast step cannot run
    with running({"m": fallback}) as engine:
        written = texts(engine.submit(request(model, "The lamp", n=2, max_tokens=40, seed=3)))
    assert written == fallback.generate_many("The lamp", num_samples=2, length=40, seed=3, temperature=1.0, top_k=0)


def test_a_stop_ends_the_choice_as_it_ends_generate_many(model):
    reference = model.generate("The", length=200, seed=2, temperature=1.0, top_k=0)
    stop = reference[40:42]
    with running({"m": model}) as engine:
        job = engine.submit(request(model, "The", max_tokens=200, seed=2, stop=(stop,)))
        written = events(job)
    text = "".join(event.text for event in written if isinstance(event, Piece))
    assert text == reference[: reference.find(stop)]
    assert written[-1] == Finish(0, "stop", len(job.generation.prompt_ids), written[-1].completion_tokens)


def test_choices_of_one_request_draw_from_streams_of_their_own(model):
    with running({"m": model}) as engine:
        three = texts(engine.submit(request(model, "The", n=3, max_tokens=40, seed=8)))
        one = texts(engine.submit(request(model, "The", n=1, max_tokens=40, seed=8)))
    assert three[0] == one[0]
    assert len(set(three)) == 3


def test_a_jobs_first_text_and_its_end_go_at_once_and_text_between_hand_overs_is_one_piece(model, monkeypatch):
    monkeypatch.setattr("textgen.serve.engine._HAND_OVER_SECONDS", 3600.0)  # growing text is never due
    engine = Engine({"m": model}, max_batch=4, max_queue=2, state_cache_mb=1)  # not started: we step it
    job = engine.submit(request(model, "The"))
    engine._send_text(job, 0, "a", [])
    engine._post()
    assert job._buffer == [Piece(0, "a", ())]  # the first text: handed over at once
    engine._send_text(job, 0, "b", [])
    engine._send_text(job, 0, "c", [])
    engine._post()
    assert job._buffer == [Piece(0, "a", ())]  # growing text waits
    engine._send(job, Finish(0, "length", 1, 3))
    engine._post()
    assert job._buffer == [Piece(0, "a", ()), Piece(0, "bc", ()), Finish(0, "length", 1, 3)]


def test_an_async_handler_reads_the_same_events_as_a_blocking_one(model):
    generation = request(model, "The", n=2, max_tokens=30, seed=3, logprobs=1)

    async def read(engine: Engine) -> list:
        return [event async for event in engine.submit(generation)]

    with running({"m": model}) as engine:
        assert written(asyncio.run(read(engine))) == written(engine.submit(generation))


# --- text that is safe to send ----------------------------------------------------------------------


class BytePieces:
    """A tokenizer whose tokens are arbitrary byte pieces (cut anywhere, even inside a character)."""

    unk_id = None

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]


def text_until_a_stop(pieces: list[bytes], stops: list[str]) -> str:
    """The text up to the first stop, found as soon as a token completes one (the earliest of
    those it completes), as a streaming writer must: it cannot wait for a longer stop."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    for piece in pieces:
        text += decoder.decode(piece)
        found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
        if found:
            return text[: min(found)]
    return text + decoder.decode(b"", final=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet="ab é日😀\n", min_size=1, max_size=40), data=st.data())
def test_streamed_pieces_never_split_a_character_nor_leak_a_stop(text, data):
    raw = text.encode()
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw) - 1))), label="cuts") - {len(raw)})
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    stops = data.draw(st.lists(st.text(alphabet="ab é日😀\n", min_size=1, max_size=4), max_size=3), label="stops")
    writer = SampleText(BytePieces(pieces), None, stops)
    sent = []
    for token in range(len(pieces)):
        sent.append(writer.feed(token))
        if writer.finished:
            break
    sent.append(writer.finish())
    assert "".join(sent) == text_until_a_stop(pieces, stops)  # nothing of a stop was sent, nothing lost
    assert all("\ufffd" not in piece for piece in sent)  # no piece ends inside a character


@pytest.fixture(scope="module")
def subword_model(tmp_path_factory, prose, make_checkpoint) -> TextModel:
    text = prose + "\nCafé, 日本, 😀.\n"  # rare: spelled in byte pieces
    return textgen.load(make_checkpoint(tmp_path_factory.mktemp("serve") / "subword", text, "subword"), device="cpu")


def spelled(tokens) -> str:
    """The text a choice's tokens spell, from their logprob texts (byte pieces as "bytes:\\xe4")."""
    raw = b""
    for info in tokens:
        if info.token.startswith("bytes:"):
            raw += bytes(int(hexa, 16) for hexa in info.token[len("bytes:"):].split("\\x")[1:])
        else:
            raw += info.token.encode()
    return raw.decode("utf-8", errors="replace")


def test_a_subword_models_pieces_add_up_to_its_tokens_and_a_stop_cuts_them(subword_model):
    model = subword_model
    with running({"m": model}) as engine:
        whole = events(engine.submit(request(model, "Café", max_tokens=80, seed=5, temperature=1.5, logprobs=0)))
        pieces = [event for event in whole if isinstance(event, Piece)]
        text = "".join(piece.text for piece in pieces)
        stop = text[len(text) // 2 : len(text) // 2 + 2]
        cut = texts(engine.submit(request(model, "Café", max_tokens=80, seed=5, temperature=1.5, stop=(stop,))))[0]
    assert text == spelled(info for piece in pieces for info in piece.tokens)
    assert cut == text[: text.find(stop)]


# --- logprobs and echo ----------------------------------------------------------------------------------


def test_echo_scores_the_prompt_as_the_evaluator_does(model):
    prompt = "The lighthouse stood on a low island of grey rock."
    with running({"m": model}) as engine:
        (echoed, finish) = events(engine.submit(request(model, prompt, max_tokens=0, echo=True, logprobs=0)))
    assert echoed.text == prompt and finish == Finish(0, "length", len(prompt), 0)
    assert echoed.tokens[0].logprob is None
    assert [info.offset for info in echoed.tokens] == list(range(len(prompt)))
    # One segment: the scorer's state runs through the whole prompt, as the engine's does.
    nats, count = total_loss(model.model, torch.tensor(model.tokenizer.encode(prompt)), rows=1)
    assert count == len(prompt) - 1
    assert -sum(info.logprob for info in echoed.tokens[1:]) == pytest.approx(nats, rel=1e-4)


def test_a_greedy_choices_logprob_is_its_best_alternative(model):
    with running({"m": model}) as engine:
        written = events(engine.submit(request(model, "The", max_tokens=20, greedy=True, logprobs=3, echo=True)))
    tokens = [info for event in written if isinstance(event, Piece) for info in event.tokens][3:]
    assert len(tokens) == 20
    for info in tokens:
        assert len(info.top) == 3
        assert info.logprob == pytest.approx(max(info.top.values()))
        assert info.top[info.token] == pytest.approx(info.logprob)
    assert [info.offset for info in tokens] == list(range(3, 23))


# --- bounds, cancel, drain ------------------------------------------------------------------------------


def test_a_cancelled_job_leaves_the_batch_within_a_step(model):
    metrics = ServeMetrics()
    with running({"m": model}, metrics=metrics) as engine:
        job = engine.submit(request(model, "The", max_tokens=10**9, seed=1))
        stream = iter(job)
        assert isinstance(next(stream), Piece)
        assert wait_for(lambda: metrics.value("textgen_batch_rows") == 1)
        job.cancel()
        rest = list(stream)
        assert isinstance(rest[-1], Finish) and rest[-1].reason == "cancelled"
        assert wait_for(lambda: metrics.value("textgen_batch_rows") == 0)
        assert engine.active_rows == 0


def test_a_prompt_cancelled_while_it_is_read_ends_every_choice(model, prose):
    metrics = ServeMetrics()
    with running({"m": model}, metrics=metrics) as engine:
        job = engine.submit(request(model, prose * 20, n=3, max_tokens=10, seed=1))
        assert wait_for(lambda: engine.active_rows == 1)
        job.cancel()
        assert [(event.reason, event.completion_tokens) for event in events(job)] == [("cancelled", 0)] * 3
        assert wait_for(lambda: metrics.value("textgen_batch_rows") == 0)


def test_a_job_whose_event_loop_has_closed_is_cancelled_and_leaves_the_batch(model):
    with running({"m": model}) as engine:
        job = engine.submit(request(model, "The", max_tokens=10**9, seed=1))
        loop = asyncio.new_event_loop()
        job.listen(loop, lambda events: None)
        loop.close()  # the handler's loop went away without cancelling: nobody reads this job
        assert wait_for(lambda: job.cancelled)
        assert wait_for(lambda: engine.active_rows == 0)


def test_many_jobs_read_on_one_event_loop_write_what_each_writes_alone(model):
    """merged() reads every job through one inbox: each job's events, in order, tagged with its place."""
    from textgen.serve.app import merged

    generations = [request(model, "The", n=2, max_tokens=30, seed=seed, temperature=0.9, top_k=20)
                   for seed in range(5)]

    async def read_together(engine: Engine) -> list[list]:
        read: list[list] = [[] for _ in generations]
        async for index, event in merged([engine.submit(g) for g in generations]):
            read[index].append(event)
        return read

    with running({"m": model}) as engine:
        alone = [written(engine.submit(generation)) for generation in generations]
        assert [written(events) for events in asyncio.run(read_together(engine))] == alone


def test_a_full_queue_answers_busy_with_a_time_to_come_back(model):
    engine = Engine({"m": model}, max_batch=4, max_queue=2, state_cache_mb=1)  # not started: nothing moves
    jobs = [engine.submit(request(model, "The")) for _ in range(2)]
    with pytest.raises(Busy) as refused:
        engine.submit(request(model, "The"))
    assert refused.value.retry_after > 0
    assert engine.queue_depth == 2
    engine.drain(timeout=0)
    assert all([event.reason for event in events(job)] == ["cancelled"] for job in jobs)


def test_a_full_batch_queues_the_next_job_refuses_the_one_after_and_serves_it_once_there_is_room(model):
    with running({"m": model}, max_batch=1, max_queue=1) as engine:
        endless = engine.submit(request(model, "The", max_tokens=10**9, seed=1))
        assert isinstance(next(iter(endless)), Piece)
        assert wait_for(lambda: engine.tokens_per_second > 0)  # measured at the end of each step
        waiting = engine.submit(request(model, "The", max_tokens=5, seed=2))
        with pytest.raises(Busy) as refused:
            engine.submit(request(model, "The"))
        assert refused.value.retry_after >= 1
        assert engine.queue_depth == 1
        endless.cancel()
        assert [event.reason for event in events(waiting) if isinstance(event, Finish)] == ["length"]


def test_unknown_models_and_too_many_choices_are_refused(model):
    engine = Engine({"m": model}, max_batch=4, max_queue=2, state_cache_mb=1)
    with pytest.raises(UnknownModel):
        engine.submit(Generation("other", (1, 2)))
    with pytest.raises(OptionError, match="n"):
        engine.submit(request(model, "The", n=5))


def test_drain_finishes_short_jobs_cancels_long_ones_and_refuses_new(model):
    engine = Engine({"m": model}, max_batch=8, max_queue=8, state_cache_mb=1)
    engine.start()
    short = engine.submit(request(model, "The", max_tokens=5, seed=1))
    endless = engine.submit(request(model, "The", max_tokens=10**9, seed=1))
    engine.drain(timeout=1.0)
    assert [event.reason for event in events(short) if isinstance(event, Finish)] == ["length"]
    assert [event.reason for event in events(endless) if isinstance(event, Finish)] == ["cancelled"]
    with pytest.raises(Busy):
        engine.submit(request(model, "The"))


def test_rows_never_pass_max_batch_and_every_job_is_served(model):
    metrics = ServeMetrics()
    seen_rows = []
    with running({"m": model}, max_batch=3, metrics=metrics) as engine:
        jobs = [engine.submit(request(model, "The", n=2, max_tokens=15, seed=seed)) for seed in range(10)]
        for job in jobs:
            for _ in job:
                seen_rows.append(engine.active_rows)
    assert max(seen_rows) <= 3
    assert metrics.value("textgen_tokens_generated_total", model="m") == 10 * 2 * 15
    assert metrics.value("textgen_time_to_first_token_seconds_count") == 10


# --- the state cache ---------------------------------------------------------------------------------------


def test_a_cached_conversation_writes_exactly_what_a_cold_read_writes(model):
    first = request(model, "The keeper climbed", max_tokens=40, seed=1)
    hits = ServeMetrics()
    with running({"m": model}, metrics=hits) as engine:
        answer = texts(engine.submit(first))[0]
        follow = request(model, "The keeper climbed" + answer + "\nand then", max_tokens=40, seed=2, logprobs=2)
        warm = written(engine.submit(follow))
        again = written(engine.submit(follow))  # the whole prompt cached this time
    assert hits.value("textgen_state_cache_hits_total") == 2
    misses = ServeMetrics()
    with running({"m": model}, metrics=misses) as engine:
        cold = written(engine.submit(follow))
    assert misses.value("textgen_state_cache_misses_total") == 1
    assert warm == cold == again


def test_the_cache_keeps_within_its_megabytes(model):
    with running({"m": model}, state_cache_mb=0.01) as engine:
        for seed in range(20):
            texts(engine.submit(request(model, "the keeper " * (seed + 1), max_tokens=10, seed=seed)))
    assert 0 < engine.cache.bytes <= 10_000
    assert len(engine.cache) < 40


# --- a model replaced between steps ------------------------------------------------------------------------


def test_a_replaced_model_finishes_running_rows_on_the_old_weights(model):
    changed = copy.deepcopy(model.model)
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.mul_(1.5)
    new = TextModel(changed, model.tokenizer)
    long, short = (request(model, "The", max_tokens=300, seed=6), request(model, "The", max_tokens=30, seed=6))
    with running({"m": model}) as engine:
        job = engine.submit(long)
        stream = iter(job)
        first = next(stream)
        engine.replace_model("m", new)
        after = texts(engine.submit(short))[0]
        old = first.text + "".join(event.text for event in stream if isinstance(event, Piece))
    assert old == model.generate("The", length=300, seed=6, temperature=1.0, top_k=0)
    assert after == new.generate("The", length=30, seed=6, temperature=1.0, top_k=0)
    assert after != old[:30]


def test_a_model_that_cannot_be_swapped_in_leaves_the_old_one_serving(model, caplog):
    with running({"m": model}) as engine:
        engine.replace_model("m", object())  # no weights, no tokenizer
        written = texts(engine.submit(request(model, "The", max_tokens=30, seed=6)))[0]
    assert written == model.generate("The", length=30, seed=6, temperature=1.0, top_k=0)
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "could not be swapped in" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line: no traceback in the user's log


def test_nothing_of_a_finished_job_stays_in_the_engine(model):
    with running({"m": model}) as engine:
        for seed in range(30):
            texts(engine.submit(request(model, "The", n=2, max_tokens=5, seed=seed)))
        assert wait_for(lambda: engine.active_rows == 0)  # the last step ends after its events
        lane = engine._lanes["m"]
        assert (lane.rows, lane.joining, lane.ready, lane.reserved, engine.queue_depth) == ([], [], [], 0, 0)


def test_metrics_render_in_the_prometheus_text_format():
    metrics = ServeMetrics()
    metrics.requests.labels(route="/v1/completions", status="200").inc()
    text = metrics.render().decode()
    assert 'textgen_requests_total{route="/v1/completions",status="200"} 1.0' in text
    for name in ("textgen_queue_depth", "textgen_batch_rows", "textgen_time_to_first_token_seconds_bucket",
                 "textgen_token_latency_seconds_bucket", "textgen_state_cache_hits_total"):
        assert name in text
