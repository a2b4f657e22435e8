"""Validation loss on tiny Shakespeare after `textgen train FILE --max-time T` with default settings.

    python benchmarks/quality.py 80 [600 ...] [-- extra textgen train options]

Prints, for each T, the held-out loss in nats per character (the last 10% of the text, all of it)
and bits per character, beside the reference figures measured on a 2-core CPU and the target.
The defaults are the product, so by default nothing but --max-time is passed.
"""

from __future__ import annotations

import sys
import time

from _common import require_shakespeare, train_and_evaluate

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
        result = train_and_evaluate(corpus, "--max-time", f"{budget:g}", *extra)
        wall = time.perf_counter() - started
        references = ", ".join(f"{k} {v}" for k, v in REFERENCES.get(int(budget), {}).items())
        print(
            f"T={budget:g}s  val loss {result['loss']:.4f} nats/char  {result['bits_per_char']:.4f} bits/char  "
            f"(wall {wall:.0f} s; target {TARGETS.get(int(budget), '-')}; references: {references or 'none'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
