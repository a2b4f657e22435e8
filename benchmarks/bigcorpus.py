"""A big corpus on a laptop: preparation speed, cached reload, and the peak memory of training.

Builds a corpus of MEGABYTES (default 200) from tiny Shakespeare, each copy with its lines in
another order under a numbered heading, then for each tokenizer prints:
- MB/s of the first preparation into the id cache (textgen.data.prepare);
- seconds to open it again from the cache;
- the peak resident memory of `textgen train CORPUS --max-steps 20`, a real process.

    python benchmarks/bigcorpus.py [MEGABYTES] [TOKENIZER ...]

Targets on a 2-core CPU: char >= 50 MB/s, word >= 10 MB/s, a cached reload under 1 s, a peak
under 1.5 GB, and the same peak at 1,000 MB as at 200 give or take the page cache.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, require_shakespeare

from textgen.config import TokenizerConfig
from textgen.data.prepare import prepare
from textgen.data.reading import CorpusFiles


def build_corpus(path: Path, megabytes: float) -> None:
    lines = require_shakespeare().read_text(encoding="utf-8").splitlines(keepends=True)
    shuffle = random.Random(7)
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * 1e6:
            copy += 1
            order = lines[:]
            shuffle.shuffle(order)
            block = f"=== copy {copy} ===\n\n" + "".join(order) + "\n"
            out.write(block)
            written += len(block.encode("utf-8"))


def peak_memory_of_training(corpus: Path, cache: Path, tokenizer: str) -> float:
    """MB: the largest resident set of `textgen train` over its life (VmHWM, read as it runs)."""
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [sys.executable, "-m", "textgen", "train", str(corpus), "--out", str(Path(folder) / "ck"),
             "--tokenizer", tokenizer, "--max-steps", "20", "--eval-every", "20"],
            cwd=ROOT, env={**os.environ, "TEXTGEN_CACHE_DIR": str(cache)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        peak = 0
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak = max(peak, next(int(line.split()[1]) for line in status.splitlines()
                                      if line.startswith("VmHWM:")))
            except (OSError, StopIteration):
                pass
            time.sleep(0.05)
        if process.returncode != 0:
            sys.exit(f"textgen train failed: {process.stderr.read().strip()}")
    return peak / 1024


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 200.0
    kinds = sys.argv[2:] or ["char", "word", "subword"]
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "big.txt"
        build_corpus(corpus, megabytes)
        size = corpus.stat().st_size / 1e6
        print(f"corpus: {size:,.0f} MB of tiny Shakespeare, shuffled copies; CPU threads {os.cpu_count()}", flush=True)
        for kind in kinds:
            cache = Path(folder) / f"cache-{kind}"
            files = CorpusFiles(str(corpus), (corpus,))
            config = TokenizerConfig(kind=kind)
            started = time.perf_counter()
            prepared = prepare(files, config, 0.1, cache)
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = prepare(files, config, 0.1, cache)
            reload = time.perf_counter() - started
            assert again.reused
            tokens = len(prepared.train_ids) + len(prepared.val_ids)
            del prepared, again
            peak = peak_memory_of_training(corpus, cache, kind)
            print(f"{kind:8s} first preparation {size / first:6.1f} MB/s ({first:5.1f} s, {tokens:,} tokens)  "
                  f"cached reload {reload:5.2f} s  peak memory of train --max-steps 20: {peak:,.0f} MB", flush=True)


if __name__ == "__main__":
    main()
