"""Validation loss on tiny Shakespeare after `textgen train FILE --max-time T` with default settings.

    python benchmarks/quality.py 80 [600 ...] [-- extra textgen train options]

Prints, for each T, the held-out loss in nats per character (the last 10% of the text, all of it,
the state carried) and bits per character, and the same model's loss under nanoGPT's protocol
(the mean over 2,000 random 256-character windows of the held-out part, each read from a zero
state), beside the reference figures measured on a 2-core CPU and the target. The defaults are
the product, so by default nothing but --max-time is passed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import require_shakespeare, textgen

import textgen as library
from textgen.data import split_text
from textgen.evaluation import random_windows_loss

REFERENCES = {  # nats per character on the same split, measured on this kind of machine
    80: {"nanoGPT CPU recipe": 1.886, "bare PyTorch 2x512 LSTM": 1.565, "the same in bfloat16": 1.492},
    600: {"nanoGPT CPU recipe": 1.509, "bare PyTorch 2x512 LSTM": 1.418, "the same in bfloat16": 1.420,
          "nanoGPT GPU char model": 1.47},
}
TARGETS = {80: 1.45, 600: 1.38}


def main() -> None:
    corpus = require_shakespeare()
    args = sys.argv[1:]
    extra = args[args.index("--") + 1 :] if "--" in args else []
    budgets = [float(arg) for arg in (args[: args.index("--")] if "--" in args else args)] or [80.0]
    for budget in budgets:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "model"
            textgen("train", str(corpus), "--out", str(out), "--max-time", f"{budget:g}", *extra)
            wall = time.perf_counter() - started
            result = json.loads(textgen("evaluate", str(out), "--json"))
            model = library.load(out, "cpu")
            held_out = split_text(corpus.read_text(encoding="utf-8"), 0.1)[1]
            nats, count = random_windows_loss(model.model, torch.tensor(model.tokenizer.encode(held_out)))
        references = ", ".join(f"{k} {v}" for k, v in REFERENCES.get(int(budget), {}).items())
        print(
            f"T={budget:g}s  val loss {result['loss']:.4f} nats/char  {result['bits_per_char']:.4f} bits/char  "
            f"nanoGPT protocol {nats / count:.4f} nats/char  "
            f"(wall {wall:.0f} s; target {TARGETS.get(int(budget), '-')}; references: {references or 'none'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
