"""Encoding a big corpus on every core: worker processes, each with its own copy of the tokenizer
read back from the files it saved, encode batches of texts while the main process reads the next
ones and writes the ids, in order.

Workers are forked, as PyTorch's DataLoader forks its workers: they run only the tokenizer and
numpy, never torch, and a forked worker does not import the user's main module again, as a
spawned one would (a script or notebook calling textgen.api.train without an
`if __name__ == "__main__":` guard would otherwise start itself over). Where fork is not the
custom (macOS, Windows) the text is encoded in this process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from textgen.config import TokenizerConfig
from textgen.tokenizers.base import Tokenizer

Tag = TypeVar("Tag")

_worker_tokenizer: Tokenizer | None = None


def encoding_workers() -> int:
    """Worker processes worth starting: one per core this process may use, at most 8 (1: none)."""
    if sys.platform != "linux":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(8, cores)


def encode_in_parallel(jobs: Iterable[tuple[Tag, list[str]]], directory: Path, config: TokenizerConfig,
                       workers: int) -> Iterator[tuple[Tag, list[np.ndarray]]]:
    """(tag, each text's ids as encode_array gives them) for each (tag, texts) of `jobs`, in order,
    encoded by `workers` processes that load the tokenizer saved in `directory`. At most two
    batches per worker are in flight, so memory stays bounded however big the corpus."""
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(str(directory), config))
    try:
        pending: deque[tuple[Tag, Future]] = deque()
        for tag, texts in jobs:
            pending.append((tag, pool.submit(_encode_texts, texts)))
            if len(pending) >= 2 * workers:
                tag, done = pending.popleft()
                yield tag, done.result()
        while pending:
            tag, done = pending.popleft()
            yield tag, done.result()
    finally:  # after an error or a Ctrl-C, what was queued is dropped rather than waited for
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(directory: str, config: TokenizerConfig) -> None:
    from textgen.tokenizers.building import load_tokenizer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(Path(directory), config)


def _encode_texts(texts: list[str]) -> list[np.ndarray]:
    assert _worker_tokenizer is not None
    return list(map(_worker_tokenizer.encode_array, texts))
