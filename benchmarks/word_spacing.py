"""Which word tokenization predicts text better: a leading space folded into the word (" the", as
GPT-2 does) or every whitespace run as its own token? Same model, same time budget, compared in
bits per character on held-out tiny Shakespeare.

    python benchmarks/word_spacing.py [SECONDS]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import require_shakespeare

from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.data.corpus import load_corpus
from textgen.training import train


def main() -> None:
    corpus = load_corpus(str(require_shakespeare()))
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    for fold in (True, False):
        with tempfile.TemporaryDirectory() as folder:
            result = train(
                corpus,
                Path(folder) / "model",
                ModelConfig(),
                TokenizerConfig(kind="word", fold_spaces=fold),
                TrainConfig(max_time=seconds),
            )
        label = "folded leading space" if fold else "whitespace runs apart"
        print(f"{label:24s} val {result.best.val_loss:.4f} nats/token  "
              f"{result.best.val_bits_per_char:.4f} bits/char  ({result.steps} steps in {seconds:g} s)", flush=True)


if __name__ == "__main__":
    main()
