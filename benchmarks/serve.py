"""Serving speed: textgen serve's engine under 1, 4, 16 and 64 concurrent requests, beside the same
load one request at a time (a naive server, RWKV-Runner) and the raw batch of generate_many.

    python benchmarks/serve.py [--checkpoint PATH] [--tokens 300] [--levels 1 4 16 64] [--readers loop|threads]

Prints, in one run, per level: aggregate tokens/s, time to first token p50/p99 and whole-request
latency p50/p99 for the engine with max_batch 64 and with max_batch 1, and the raw batch's
tokens/s; then one request alone against textgen's own sampler (`generate`, one sample, the
same fast step without the engine) and the bare hand-cached step of benchmarks/sampling.py (the
best of three runs of one prompt, read in the first and cached after: the writing speed, as the
bare loop reads no prompt);
then a 10,000-character prompt read cold (by the engine's fast step, and by model.forward as
`textgen sample` primes) and a conversation's 10th turn whose history is cached, against a
100-character prompt; then resident memory after 100 and after 10,000 requests. The model is a randomly initialised 2 x 512 char LSTM over tiny
Shakespeare's 65 symbols unless --checkpoint names one: speed does not depend on the weights.
As in the server, the engine thread is the process's one long-lived computing thread: the
benchmark's own torch work (the model, the raw batch, the bare step) runs in threads that end with
it (textgen/serve/threads.py says why).
Every request draws with temperature 0.8 and top-k 40. The requests' events are read by coroutines
on one event loop, as the server's handlers read them (--readers threads: a thread per request, each
woken every step). HTTP-driven figures are the HTTP layer's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from sampling import SHAKESPEARE_SYMBOLS, cached_matrix_steps, counted_text, machine, saved_and_loaded

import textgen
from textgen.config import CHAR_NGRAM_ORDER, ModelConfig, ServeConfig
from textgen.model import RNNLanguageModel, prime
from textgen.model.ngram import NGramCounts
from textgen.sampling import prompt_ids
from textgen.serve import Engine, Generation, Piece
from textgen.serve.threads import in_passing_thread
from textgen.tokenizers import CharTokenizer

SHAPING = dict(temperature=0.8, top_k=40)
PROMPT_CHARACTERS = 100


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def prompt_text(length: int, seed: int) -> str:
    chooser = random.Random(seed)
    return "".join(chooser.choice(SHAKESPEARE_SYMBOLS) for _ in range(length))


def ids_of(tokenizer, text: str) -> tuple[int, ...]:
    """The prompt's ids as the server encodes them; symbols a --checkpoint model never saw are replaced."""
    return tuple(prompt_ids(tokenizer, text, "replace"))


def drive(engine: Engine, tokenizer, clients: int, tokens: int, readers: str = "loop") -> dict[str, float]:
    """`clients` requests at once, read as coroutines on one event loop, as the server's handlers
    read them (readers "loop"), or each by a thread of its own (readers "threads")."""
    first, whole, made = [], [], []

    def submitted(index: int):
        ids = ids_of(tokenizer, prompt_text(PROMPT_CHARACTERS, index))
        return time.perf_counter(), engine.submit(Generation("m", ids, max_tokens=tokens, seed=index, **SHAPING))

    def note(started: float, event, seen_first: bool) -> bool:
        if isinstance(event, Piece) and not seen_first:
            first.append(time.perf_counter() - started)
            return True
        if not isinstance(event, Piece):
            made.append(event.completion_tokens)
        return seen_first

    def client(index: int) -> None:
        started, job = submitted(index)
        seen_first = False
        for event in job:
            seen_first = note(started, event, seen_first)
        whole.append(time.perf_counter() - started)

    async def coroutine(index: int) -> None:
        started, job = submitted(index)
        seen_first = False
        async for event in job:
            seen_first = note(started, event, seen_first)
        whole.append(time.perf_counter() - started)

    async def all_coroutines() -> None:
        await asyncio.gather(*(coroutine(index) for index in range(clients)))

    started = time.perf_counter()
    if readers == "loop":
        asyncio.run(all_coroutines())
    else:
        threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    elapsed = time.perf_counter() - started
    return {"rate": sum(made) / elapsed, "first50": percentile(first, 0.5), "first99": percentile(first, 0.99),
            "whole50": percentile(whole, 0.5), "whole99": percentile(whole, 0.99)}


def engine_for(model, max_batch: int) -> Engine:
    engine = Engine({"m": model}, max_batch=max_batch, max_queue=1024, state_cache_mb=64)
    engine.start()
    return engine


def raw_batch_rate(model, clients: int, tokens: int) -> float:
    def timed() -> float:
        started = time.perf_counter()
        texts = model.generate_many(prompt_text(PROMPT_CHARACTERS, 0), clients, length=tokens, seed=1, **SHAPING)
        return sum(map(len, texts)) / (time.perf_counter() - started)

    return in_passing_thread(timed)


def first_token_seconds(engine: Engine, ids: tuple[int, ...]) -> float:
    started = time.perf_counter()
    for event in engine.submit(Generation("m", ids, max_tokens=1, seed=1, **SHAPING)):
        if isinstance(event, Piece):
            return time.perf_counter() - started
    return time.perf_counter() - started


def long_prompts(model, tokenizer) -> None:
    """A 10,000-character prompt cold, and as a conversation's 10th turn with its history cached."""
    history = prompt_text(10_000, 7)
    last_line = "\n" + prompt_text(PROMPT_CHARACTERS - 1, 8)
    engine = engine_for(model, 64)
    try:
        short = statistics.median(first_token_seconds(engine, ids_of(tokenizer, prompt_text(100, s)))
                                  for s in range(20, 25))
        cold = first_token_seconds(engine, ids_of(tokenizer, history))  # now cached
        turn = first_token_seconds(engine, ids_of(tokenizer, history + last_line))
    finally:
        engine.drain(timeout=1)
    def primed() -> None:
        with torch.no_grad():
            prime(model.model, list(ids_of(tokenizer, history)))

    forward = in_passing_thread(lambda: _timed(primed))
    print(f"10,000-char prompt, first token: engine (fast step, cold) {cold:.2f} s; "
          f"model.forward priming {forward:.2f} s")
    print(f"10th turn (10,000 chars cached + {PROMPT_CHARACTERS}): first token {turn * 1000:.1f} ms against "
          f"{short * 1000:.1f} ms for a {PROMPT_CHARACTERS}-char prompt: {turn / short:.2f}x (target at most 1.2x)")


def resident_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def flat_memory(model, tokenizer, requests: int) -> None:
    """Resident memory after 100 requests and after `requests`, each a fresh prompt asking for 20
    tokens, 16 at a time, with the server's default state cache, which fills to its bound on the
    way (two states a request: after the prompt and after prompt + completion); the cache's own
    share of the growth is printed beside it."""
    cache_mb = ServeConfig().state_cache_mb
    engine = Engine({"m": model}, max_batch=64, max_queue=1024, state_cache_mb=cache_mb)
    engine.start()
    try:
        after, cached = {}, {}
        for done in range(0, requests, 16):
            jobs = [engine.submit(Generation("m", ids_of(tokenizer, prompt_text(PROMPT_CHARACTERS, done + k)),
                                             max_tokens=20, seed=k, **SHAPING)) for k in range(16)]
            for job in jobs:
                for _ in job:
                    pass
            if done + 16 >= 100 and 100 not in after:
                after[100], cached[100] = resident_mb(), engine.cache.bytes / 1e6
        after[requests], cached[requests] = resident_mb(), engine.cache.bytes / 1e6
    finally:
        engine.drain(timeout=1)
    growth, cache_growth = after[requests] - after[100], cached[requests] - cached[100]
    print(f"resident memory after 100 requests {after[100]:,.0f} MB, after {requests:,} {after[requests]:,.0f} MB: "
          f"{growth:+,.0f} MB, of which the state cache filling to its {cache_mb:g} MB bound {cache_growth:+,.0f} MB; "
          f"the rest {growth - cache_growth:+,.0f} MB (target: within 50 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained char model (default: a random 2 x 512 LSTM)")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrent requests")
    parser.add_argument("--readers", choices=["loop", "threads"], default="loop",
                        help="read the requests' events as coroutines on one event loop, as the server does, "
                             "or each by a thread of its own")
    parser.add_argument("--memory-requests", type=int, default=10_000, help="requests for the flat-memory figure")
    parser.add_argument("--counts", action="store_true",
                        help="the random model shaped as a default char model: skip connections and "
                             f"{CHAR_NGRAM_ORDER}-gram counts mixed in (the bare step, written for the plain "
                             "model, is then not timed)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        model = in_passing_thread(lambda: served_model(args.checkpoint, folder, args.counts))
        tokenizer = model.tokenizer
        described = ("loaded from " + str(args.checkpoint) if args.checkpoint else "random 2 x 512 char LSTM" +
                     (f" with skip connections and {CHAR_NGRAM_ORDER}-gram counts" if args.counts else ""))
        print(f"model: {described}; "
              f"{args.tokens} tokens per request after a {PROMPT_CHARACTERS}-char prompt; temperature 0.8, top-k 40; "
              f"events read by {'one event loop' if args.readers == 'loop' else 'a thread per request'}")
        print(f"{'clients':>7} | {'engine tok/s':>12} {'ttft p50/p99 s':>15} {'whole p50/p99 s':>16} | "
              f"{'one-at-a-time tok/s':>19} {'ttft p99 s':>10} | {'raw batch tok/s':>15} | vs 1-at-a-time, vs raw")
        for clients in args.levels:
            batched = engine_for(model, 64)
            try:
                ours = drive(batched, tokenizer, clients, args.tokens, args.readers)
            finally:
                batched.drain(timeout=1)
            single = engine_for(model, 1)
            try:
                naive = drive(single, tokenizer, clients, args.tokens, args.readers)
            finally:
                single.drain(timeout=1)
            raw = raw_batch_rate(model, clients, args.tokens)
            print(f"{clients:>7} | {ours['rate']:>12,.0f} {ours['first50']:>7.3f}/{ours['first99']:<7.3f} "
                  f"{ours['whole50']:>8.2f}/{ours['whole99']:<7.2f} | {naive['rate']:>19,.0f} {naive['first99']:>10.2f} | "
                  f"{raw:>15,.0f} | {ours['rate'] / naive['rate']:.1f}x, {ours['rate'] / raw:.2f}x", flush=True)
        steps = 2 * args.tokens
        # The bare loop is written for the random model's shape (2 LSTM layers, no skip connections).
        plain = not args.checkpoint and not args.counts
        if plain:
            bare = max(steps / in_passing_thread(lambda: _timed(lambda: cached_matrix_steps(model.model, 1, steps)))
                       for _ in range(3))
        # textgen's own sampler on the same model: the same fast step, without the engine around it.
        sampler = max(in_passing_thread(lambda: _sampler_rate(model, steps)) for _ in range(3))
        alone = engine_for(model, 64)
        try:
            one = max(drive(alone, tokenizer, 1, steps, args.readers)["rate"] for _ in range(3))
        finally:
            alone.drain(timeout=1)
        against_bare = (f" and the bare hand-cached step's {bare:,.0f}: {one / bare:.2f}x (target at least 1.0x)"
                        if plain else "")
        print(f"one request alone: {one:,.0f} tok/s, against textgen's sampler's {sampler:,.0f} "
              f"(`generate`, one sample): {one / sampler:.2f}x{against_bare}")
        long_prompts(model, tokenizer)
        flat_memory(model, tokenizer, args.memory_requests)


def served_model(checkpoint: Path | None, folder: str, counts: bool = False):
    """The model to serve: the checkpoint's, or a random 2 x 512 char LSTM saved and loaded as a
    checkpoint; with `counts`, shaped as a default char model is (skip connections, n-gram counts)."""
    if checkpoint:
        model = textgen.load(checkpoint, device="cpu")
    else:
        tokenizer = CharTokenizer.from_text(SHAKESPEARE_SYMBOLS)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=2, hidden_size=512,
                             embedding_size=128, skip_connections=counts, ngram_order=CHAR_NGRAM_ORDER if counts else 0)
        torch.manual_seed(0)
        network = RNNLanguageModel(config).eval()
        if counts:
            network.attach_counts(NGramCounts.count(counted_text(tokenizer), tokenizer.vocab_size, CHAR_NGRAM_ORDER))
        model = saved_and_loaded(folder, "random-lstm", network, tokenizer)[1]
    model.step  # built (and checked against forward) here rather than by the first engine
    return model


def _sampler_rate(model, tokens: int) -> float:
    started = time.perf_counter()
    text = model.generate("ROMEO:", length=tokens, seed=1, **SHAPING)  # as sampling.py: a 6-char prompt
    return len(text) / (time.perf_counter() - started)


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
