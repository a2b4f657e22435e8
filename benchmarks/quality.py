"""Validation loss on tiny Shakespeare after `textgen train FILE --max-time T` with default settings.

    python benchmarks/quality.py 80 [600 ...] [--threads N] [--bare] [-- extra textgen train options]

Prints, for each T, the held-out loss in nats per character (the last 10% of the text, all of it,
the state carried) and bits per character, and the same model's loss under nanoGPT's protocol
(the mean over 2,000 random 256-character windows of the held-out part, each read from a zero
state), beside the reference figures measured on a 2-core CPU and the target. The defaults are
the product, so by default nothing but --max-time is passed.

--bare also trains, in the same run, the tuned bare PyTorch loop issue 13 measures against
(2 x 384 LSTM, no skip connections, 64 rows x 64 characters, AdamW at a constant 4e-3, clipping
at 1, float32) for 3T, and scores it the same two ways. --threads N runs everything on N threads
(1 stands for a machine half as fast); `-- --precision float32` stands for a CPU without bfloat16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import ROOT, require_shakespeare

import textgen as library
from textgen.config import ModelConfig
from textgen.data import batchify, split_text
from textgen.evaluation import random_windows_loss, total_loss
from textgen.model import RNNLanguageModel
from textgen.tokenizers import CharTokenizer

REFERENCES = {  # nats per character on the same split, measured on this kind of machine
    80: {"nanoGPT CPU recipe": 1.886, "bare PyTorch 2x512 LSTM": 1.565, "the same in bfloat16": 1.492},
    600: {"nanoGPT CPU recipe": 1.509, "bare PyTorch 2x512 LSTM": 1.418, "the same in bfloat16": 1.420,
          "nanoGPT GPU char model": 1.47},
}
TARGETS = {80: 1.45, 600: 1.38}


def textgen(threads: int | None, *args: str) -> str:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    done = subprocess.run([sys.executable, "-m", "textgen", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(f"textgen {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def bare_loop(text: str, seconds: float) -> tuple[RNNLanguageModel, CharTokenizer, int]:
    """The tutorial loop, tuned: trained for `seconds`; the model, its tokenizer and its steps."""
    train_text, _ = split_text(text, 0.1)
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden_size=384,
                                         embedding_size=128, dropout=0.0, skip_connections=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    inputs, targets = batchify(torch.tensor(tokenizer.encode(train_text)), 64)
    state, steps, position = None, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if position + 64 > inputs.shape[1]:
            position, state = 0, None
        logits, state = model(inputs[:, position : position + 64], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, position : position + 64].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        position, steps = position + 64, steps + 1
    return model, tokenizer, steps


def scores(model: RNNLanguageModel, tokenizer: CharTokenizer, held_out: str, context: str) -> tuple[float, float]:
    """Nats per character: the whole held-out part with the state carried, and nanoGPT's protocol."""
    ids = torch.tensor(tokenizer.encode(held_out))
    nats, count = total_loss(model, ids, tokenizer.encode(context)[-1])
    windows, window_count = random_windows_loss(model, ids)
    return nats / count, windows / window_count


def main() -> None:
    corpus = require_shakespeare()
    args = sys.argv[1:]
    extra = args[args.index("--") + 1 :] if "--" in args else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budgets", type=float, nargs="*", default=[80.0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--bare", action="store_true")
    options = parser.parse_args(args[: args.index("--")] if "--" in args else args)
    if options.threads:
        torch.set_num_threads(options.threads)
    text = corpus.read_text(encoding="utf-8")
    train_text, held_out = split_text(text, 0.1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; textgen options: {' '.join(extra) or 'none'}",
          flush=True)
    for budget in options.budgets:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "model"
            plan = textgen(options.threads, "train", str(corpus), "--out", str(out), "--max-time", f"{budget:g}",
                           *extra)
            wall = time.perf_counter() - started
            result = json.loads(textgen(options.threads, "evaluate", str(out), "--json"))
            model = library.load(out, "cpu")
            nats, count = random_windows_loss(model.model, torch.tensor(model.tokenizer.encode(held_out)))
        chosen = next((line.strip() for line in plan.splitlines() if line.startswith("preset")), "no preset")
        references = ", ".join(f"{k} {v}" for k, v in REFERENCES.get(int(budget), {}).items())
        print(
            f"T={budget:g}s  val loss {result['loss']:.4f} nats/char  {result['bits_per_char']:.4f} bits/char  "
            f"nanoGPT protocol {nats / count:.4f} nats/char  "
            f"(wall {wall:.0f} s; {chosen}; target {TARGETS.get(int(budget), '-')}; "
            f"references: {references or 'none'})",
            flush=True,
        )
        if options.bare:
            model, tokenizer, steps = bare_loop(text, 3 * budget)
            carried, windows = scores(model, tokenizer, held_out, train_text[-1:])
            print(f"  bare loop for 3T={3 * budget:g}s ({steps:,} steps): val loss {carried:.4f} nats/char  "
                  f"nanoGPT protocol {windows:.4f}  -> textgen {'ahead' if result['loss'] < carried else 'BEHIND'} "
                  f"by {carried - result['loss']:+.4f}", flush=True)


if __name__ == "__main__":
    main()
