"""How long each tokenizer takes to learn its vocabulary from tiny Shakespeare and to encode it,
and how many tokens it makes.

    python benchmarks/tokenizers.py
"""

from __future__ import annotations

import time

from _common import require_shakespeare

from textgen.config import TokenizerConfig
from textgen.tokenizers import build_tokenizer


def main() -> None:
    text = require_shakespeare().read_text(encoding="utf-8")
    for config in (TokenizerConfig(kind="char"), TokenizerConfig(kind="word"), TokenizerConfig(kind="subword")):
        started = time.perf_counter()
        tokenizer = build_tokenizer(config, text)
        built = time.perf_counter()
        ids = tokenizer.encode(text)
        encoded = time.perf_counter()
        megabytes = len(text.encode("utf-8")) / 1e6
        print(f"{config.kind:8s} vocabulary {tokenizer.vocab_size:6,}  {len(ids):9,} tokens  "
              f"learn {built - started:5.2f} s  encode {encoded - built:5.2f} s "
              f"({megabytes / (encoded - built):5.1f} MB/s)", flush=True)


if __name__ == "__main__":
    main()
