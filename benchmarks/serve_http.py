"""Serving over HTTP: a real `textgen serve` process driven by 1, 4, 16 and 64 concurrent streaming
clients, beside the same load on a server that takes one request at a time (--max-batch 1, as a
naive server and RWKV-Runner do), then twice its capacity to check every request is served or
refused with 503 (none lost, none hung).

    python benchmarks/serve_http.py [--checkpoint PATH] [--tokens 300] [--levels 1 4 16 64]

Prints per level: aggregate tokens/s, time to first token p50/p99, whole-request latency p50/p99
and errors, for each server, and the ratio. The model is a randomly initialised 2 x 512 char LSTM
over tiny Shakespeare's symbols unless --checkpoint names one (speed does not depend on the
weights). Each client asks for --tokens tokens after a 100-character prompt, temperature 0.8,
top-k 40. The engine alone (no HTTP) is measured by benchmarks/serve.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from sampling import SHAKESPEARE_SYMBOLS, machine, saved_and_loaded
from serve import PROMPT_CHARACTERS, percentile, prompt_text

from textgen.config import ModelConfig
from textgen.model import RNNLanguageModel
from textgen.tokenizers import CharTokenizer

WARM_UP_PROMPT = 1_000_000  # a prompt no level sends


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`textgen serve` on a free port, up once /health answers 200; stopped by SIGTERM."""

    def __init__(self, checkpoint: Path, *options: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen([sys.executable, "-m", "textgen", "serve", f"m={checkpoint}", "--port", port,
                                         *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server ended: {self.process.stderr.read()}")
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    drive(self.url, 1, 8, WARM_UP_PROMPT)  # builds the fast step: not part of any figure
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not come up in 300 s")

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def stream_once(client: httpx.Client, url: str, index: int, prompt: int, tokens: int, timeout: float) -> dict:
    """One streaming client: its time to first text, whole time, tokens and HTTP status."""
    body = {"model": "m", "prompt": prompt_text(PROMPT_CHARACTERS, prompt), "max_tokens": tokens, "stream": True, "seed": index,
            "temperature": 0.8, "top_k": 40, "stream_options": {"include_usage": True}}
    started, first, made = time.perf_counter(), None, 0
    try:
        with client.stream("POST", url + "/v1/completions", json=body, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                return {"status": response.status_code}
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    made = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError:
        return {"status": "hung or broken"}
    return {"status": 200, "first": first, "whole": time.perf_counter() - started, "tokens": made}


def drive(url: str, clients: int, tokens: int, first_prompt: int, timeout: float = 600) -> dict:
    """`clients` streaming requests at once, each from a thread of its own, with the prompts numbered
    from `first_prompt`: a server keeps the state of every prompt it read, so a prompt sent twice to
    one server would be read once and flatter its figures. They share one httpx
    client made beforehand, as a real program keeps its client: making one builds an SSL context
    (about 20 ms of CPU under the GIL), which, made by each thread inside its timing, was most of
    the time to first token measured at 16 clients."""
    results: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(limits=limits) as client:
        threads = [threading.Thread(target=lambda i=i: results.append(
                       stream_once(client, url, i, first_prompt + i, tokens, timeout))) for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    served = [r for r in results if r["status"] == 200]
    firsts = [r["first"] for r in served if r["first"] is not None] or [float("nan")]
    wholes = [r["whole"] for r in served] or [float("nan")]
    return {"rate": sum(r["tokens"] for r in served) / elapsed, "first50": percentile(firsts, 0.5),
            "first99": percentile(firsts, 0.99), "whole50": percentile(wholes, 0.5),
            "whole99": percentile(wholes, 0.99), "errors": len(results) - len(served),
            "statuses": [r["status"] for r in results]}


def random_checkpoint(folder: str) -> Path:
    tokenizer = CharTokenizer.from_text(SHAKESPEARE_SYMBOLS)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=2, hidden_size=512,
                         embedding_size=128, skip_connections=False)
    torch.manual_seed(0)
    checkpoint, _ = saved_and_loaded(folder, "random-lstm", RNNLanguageModel(config).eval(), tokenizer)
    return checkpoint


def overload(checkpoint: Path, tokens: int) -> None:
    """Twice the capacity (rows + waiting places) at once: each served or refused with 503."""
    max_batch, max_queue = 8, 8
    with ServerProcess(checkpoint, "--max-batch", str(max_batch), "--max-queue", str(max_queue),
                       "--max-tokens-limit", str(tokens)) as server:
        result = drive(server.url, 2 * (max_batch + max_queue), tokens, 0, timeout=300)
    statuses = result["statuses"]
    served, refused = statuses.count(200), statuses.count(503)
    lost = len(statuses) - served - refused
    print(f"at 2x capacity ({max_batch} rows + {max_queue} waiting, {len(statuses)} clients): {served} served, "
          f"{refused} refused with 503, {lost} lost or hung (target 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained char model (default: a random 2 x 512 LSTM)")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrent clients")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or random_checkpoint(folder)
        print(f"model: {checkpoint if args.checkpoint else 'random 2 x 512 char LSTM'}; {args.tokens} tokens per "
              f"request after a {PROMPT_CHARACTERS}-char prompt, streamed over HTTP; temperature 0.8, top-k 40")
        limit = ("--max-tokens-limit", str(args.tokens), "--max-queue", "1024")
        with ServerProcess(checkpoint, "--max-batch", "64", *limit) as batched, \
                ServerProcess(checkpoint, "--max-batch", "1", *limit) as single:
            print(f"{'clients':>7} | {'tok/s':>7} {'ttft p50/p99 s':>15} {'whole p50/p99 s':>16} {'errors':>6} | "
                  f"{'1-at-a-time tok/s':>17} {'ttft p99 s':>10} {'errors':>6} | ratio")
            first_prompt = 0
            for clients in args.levels:  # every level's prompts new to both servers
                ours = drive(batched.url, clients, args.tokens, first_prompt)
                naive = drive(single.url, clients, args.tokens, first_prompt)
                first_prompt += clients
                print(f"{clients:>7} | {ours['rate']:>7,.0f} {ours['first50']:>7.3f}/{ours['first99']:<7.3f} "
                      f"{ours['whole50']:>8.2f}/{ours['whole99']:<7.2f} {ours['errors']:>6} | "
                      f"{naive['rate']:>17,.0f} {naive['first99']:>10.2f} {naive['errors']:>6} | "
                      f"{ours['rate'] / naive['rate']:.1f}x", flush=True)
        overload(checkpoint, args.tokens)


if __name__ == "__main__":
    main()
