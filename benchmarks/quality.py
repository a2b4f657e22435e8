"""Validation loss on tiny Shakespeare after `textgen train FILE --max-time T` with default settings.

    python benchmarks/quality.py 80 [600 ...] [--threads N] [--bare] [-- extra textgen train options]

Prints, for each T, the held-out loss in nats per character (the last 10% of the text, all of it,
the state carried) and bits per character, and the same model's loss under nanoGPT's protocol
(the mean over 2,000 random 256-character windows of the held-out part, each read from a zero
state), beside the reference figures measured on a 2-core CPU and the target. The defaults are
the product, so by default nothing but --max-time is passed.

--bare also trains, in the same run, the tuned bare PyTorch loop issue 13 measures against
(an LSTM with no skip connections, 64 rows x 64 characters, AdamW, clipping at 1, float32; its
shape, dropout and rate schedule follow the budget, see bare_recipe) for 3T, and scores it the
same two ways. --bare-only trains the bare loop alone. --threads N runs everything on N threads
(1 stands for a machine half as fast); `-- --precision float32` stands for a CPU without bfloat16.
"""

from __future__ import annotations

import argparse
import json
import math
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


# The bare loop's recipes, tuned by the budget it is given. Up to 4 minutes: 2 x 384 with no
# dropout and a constant 4e-3 (the best of the shapes and rates tried at 240 s). Longer, a model
# that size overfits tiny Shakespeare within minutes, so the recipe is what a careful user does
# for a long run: 2 x 512, dropout 0.3 (on the embeddings, between the layers and on the output,
# as in PyTorch's word_language_model), the rate decayed to zero over the budget by a cosine, and
# the weights that scored best on the held-out part at twelve checks kept (early stopping; the
# checks' time is not charged). With a constant 3e-3 instead, 1,800 s reached 1.4416 nats/char.
SHORT_RECIPE = {"hidden_size": 384, "dropout": 0.0, "learning_rate": 4e-3, "cosine": 0, "checks": 0}
LONG_RECIPE = {"hidden_size": 512, "dropout": 0.3, "learning_rate": 4e-3, "cosine": 1, "checks": 12}


def bare_recipe(seconds: float) -> dict:
    return SHORT_RECIPE if seconds <= 240 else LONG_RECIPE


def bare_loop(train_text: str, held_out: str, seconds: float) -> tuple[RNNLanguageModel, CharTokenizer, int]:
    """The tutorial loop, tuned: trained for `seconds`; the model, its tokenizer and its steps."""
    recipe = bare_recipe(seconds)
    tokenizer = CharTokenizer.from_text(train_text + held_out)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden_size=recipe["hidden_size"],
                                         embedding_size=128, dropout=recipe["dropout"], skip_connections=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"])
    inputs, targets = batchify(torch.tensor(tokenizer.encode(train_text)), 64)
    held_out_ids, context = torch.tensor(tokenizer.encode(held_out)), tokenizer.encode(train_text[-1:])[-1]
    best, best_weights = float("inf"), None
    next_check = seconds / recipe["checks"] if recipe["checks"] else float("inf")
    state, steps, position, trained = None, 0, 0, 0.0
    while trained < seconds:
        started = time.perf_counter()
        if recipe["cosine"]:
            for group in optimizer.param_groups:
                group["lr"] = recipe["learning_rate"] * 0.5 * (1 + math.cos(math.pi * min(1.0, trained / seconds)))
        if position + 64 > inputs.shape[1]:
            position, state = 0, None
        model.train()
        logits, state = model(inputs[:, position : position + 64], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, position : position + 64].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        position, steps = position + 64, steps + 1
        trained += time.perf_counter() - started
        if recipe["checks"] and (trained >= next_check or trained >= seconds):  # the last check at the end
            next_check += seconds / recipe["checks"]
            model.eval()
            nats, count = total_loss(model, held_out_ids, context)
            if nats / count < best:
                best, best_weights = nats / count, {k: v.clone() for k, v in model.state_dict().items()}
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return model, tokenizer, steps


def scores(model: RNNLanguageModel, tokenizer: CharTokenizer, held_out: str, context: str) -> tuple[float, float]:
    """Nats per character: the whole held-out part with the state carried, and nanoGPT's protocol."""
    ids = torch.tensor(tokenizer.encode(held_out))
    nats, count = total_loss(model, ids, tokenizer.encode(context)[-1])
    windows, window_count = random_windows_loss(model, ids)
    return nats / count, windows / window_count


def print_bare(model: RNNLanguageModel, tokenizer: CharTokenizer, held_out: str, train_text: str, budget: float,
               steps: int, textgen_loss: float | None) -> None:
    carried, windows = scores(model, tokenizer, held_out, train_text[-1:])
    recipe = ", ".join(f"{k} {v:g}" for k, v in bare_recipe(3 * budget).items())
    lead = "" if textgen_loss is None else (
        f"  -> textgen {'ahead' if textgen_loss < carried else 'BEHIND'} by {carried - textgen_loss:+.4f}")
    print(f"  bare loop for 3T={3 * budget:g}s ({recipe}; {steps:,} steps): val loss {carried:.4f} nats/char  "
          f"nanoGPT protocol {windows:.4f}{lead}", flush=True)


def main() -> None:
    corpus = require_shakespeare()
    args = sys.argv[1:]
    extra = args[args.index("--") + 1 :] if "--" in args else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("budgets", type=float, nargs="*", default=[80.0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--bare-only", action="store_true", help="only the bare loop (for 3T), not textgen")
    options = parser.parse_args(args[: args.index("--")] if "--" in args else args)
    if options.threads:
        torch.set_num_threads(options.threads)
    text = corpus.read_text(encoding="utf-8")
    train_text, held_out = split_text(text, 0.1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; textgen options: {' '.join(extra) or 'none'}",
          flush=True)
    for budget in options.budgets:
        if options.bare_only:
            model, tokenizer, steps = bare_loop(train_text, held_out, 3 * budget)
            print_bare(model, tokenizer, held_out, train_text, budget, steps, None)
            continue
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
            model, tokenizer, steps = bare_loop(train_text, held_out, 3 * budget)
            print_bare(model, tokenizer, held_out, train_text, budget, steps, result["loss"])


if __name__ == "__main__":
    main()
