"""Training tokens per second: textgen's loop beside a bare PyTorch nn.LSTM loop, in one run.

    python benchmarks/throughput.py [--hidden 512] [--layers 2] [--batch 64] [--window 64] [--steps 40] [--rounds 3]
                                    [--only NAME ...]

The bare loop is what a tutorial writes: Embedding -> nn.LSTM -> Linear, float32, cross-entropy,
AdamW, gradient clipping, the state carried and detached between windows. textgen runs its real
training loop (`textgen.training.train`) with the same shape, batch and window, once with its
default precision (bfloat16 autocast on CPUs that multiply it natively) and once in float32, the
way it runs on a CPU without bfloat16: first on the bare loop's exact model, then with skip
connections (the default model's network, which does a little more arithmetic per token), then
with its n-gram counts mixed in as well (textgen's default character model), then with
each cell whose window trains as one parallel scan (minGRU, minLSTM) in place of the LSTM, its
hidden size chosen so the model has as many parameters as the LSTM one (printed beside it).

Every timing runs in a fresh process, so each contender meets the memory allocator as it would
alone: textgen's contenders first keep freed memory as `textgen train` does
(textgen.devices.keep_freed_memory), the bare loop runs as a tutorial leaves it, and once more
with the same allocator setting, to show what is arithmetic and what is memory. Each round times
every contender once, in turn, so a noisy neighbour hurts them alike; the figures are medians.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import SHAKESPEARE
from textgen.config import CHAR_NGRAM_ORDER, INPUT_GATED_CELLS, ModelConfig, TokenizerConfig, TrainConfig
from textgen.data.corpus import Corpus
from textgen.devices import keep_freed_memory, training_dtype
from textgen.model import RNNLanguageModel
from textgen.training import TrainingCallbacks, train

WARMUP_STEPS = 5


def corpus_text() -> str:
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")
    import pydoc_data.topics  # the same kind of English prose, always at hand

    return "\n".join(pydoc_data.topics.topics.values())


def bare_loop(ids: torch.Tensor, vocab: int, args: argparse.Namespace, autocast: bool) -> float:
    """Tokens per second of the plain loop over `args.steps` windows, after a short warm-up."""
    embedding = nn.Embedding(vocab, 128)
    lstm = nn.LSTM(128, args.hidden, args.layers, batch_first=True)
    decoder = nn.Linear(args.hidden, vocab)
    params = [*embedding.parameters(), *lstm.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    length = (ids.numel() - 1) // args.batch
    inputs = ids[: args.batch * length].view(args.batch, length)
    targets = ids[1 : args.batch * length + 1].view(args.batch, length)
    state = None
    started = 0.0
    for step in range(WARMUP_STEPS + args.steps):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        start = (step * args.window) % (length - args.window)
        x, y = inputs[:, start : start + args.window], targets[:, start : start + args.window]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output, state = lstm(embedding(x), state)
            logits = decoder(output)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
        state = tuple(s.detach() for s in state)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return args.batch * args.window * args.steps / (time.perf_counter() - started)


class _Timing(TrainingCallbacks):
    """Tokens per second over the steps after the warm-up, from the loop's own step reports."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step(self, report) -> None:
        self.times.append(time.perf_counter())


def model_shape(cell: str, vocab: int, args: argparse.Namespace, skip_connections: bool = True,
                ngram_order: int = 0) -> ModelConfig:
    """The model textgen trains: `cell` at args.layers x args.hidden for the LSTM; for another cell,
    the hidden size whose parameter count comes nearest to that LSTM's."""
    def shaped(hidden: int, kind: str = cell) -> ModelConfig:
        return ModelConfig(vocab_size=vocab, cell=kind, layers=args.layers, hidden_size=hidden, embedding_size=128,
                           skip_connections=skip_connections, ngram_order=ngram_order)

    def parameters(config: ModelConfig) -> int:
        return RNNLanguageModel(config).num_parameters()

    if cell == "lstm":
        return shaped(args.hidden)
    wanted = parameters(shaped(args.hidden, "lstm"))
    low, high = 1, 8 * args.hidden  # the count grows with the hidden size: bisect for the nearest
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if parameters(shaped(middle)) <= wanted else (low, middle)
    return min((shaped(low), shaped(high)), key=lambda config: abs(parameters(config) - wanted))


def textgen_loop(corpus: Corpus, vocab: int, args: argparse.Namespace, precision: str, skip_connections: bool = True,
                 cell: str = "lstm", ngram_order: int = 0) -> float:
    timing = _Timing()
    model = model_shape(cell, vocab, args, skip_connections, ngram_order)
    config = TrainConfig(batch_size=args.batch, seq_len=args.window, max_steps=WARMUP_STEPS + args.steps,
                         eval_every=10**9, val_fraction=0.001, precision=precision, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        train(corpus, Path(folder) / "model", model, TokenizerConfig(kind="char"), config, timing)
    # Step reports are taken after each step, so steps WARMUP+1 .. WARMUP+STEPS lie between these two.
    seconds = timing.times[-1] - timing.times[WARMUP_STEPS - 1]
    return args.batch * args.window * args.steps / seconds


def load_text() -> tuple[Corpus, torch.Tensor, int]:
    text = corpus_text()
    corpus = Corpus(text, "benchmark", None, None, hashlib.sha256(text.encode("utf-8")).hexdigest())
    vocab = sorted(set(text))
    index = {symbol: i for i, symbol in enumerate(vocab)}
    return corpus, torch.tensor([index[c] for c in text[:400_000]]), len(vocab)


# name -> (loop, precision or autocast, skip connections, keep freed memory, cell, n-gram order)
CONTENDERS = {
    "bare nn.LSTM loop, float32": ("bare", False, False, False, "lstm", 0),
    "bare nn.LSTM loop, bfloat16 autocast": ("bare", True, False, False, "lstm", 0),
    "bare nn.LSTM loop, float32, memory kept": ("bare", False, False, True, "lstm", 0),
    # The bare loops' exact model: a plain stack of layers.
    "textgen, default precision": ("textgen", "auto", False, True, "lstm", 0),
    "textgen, float32": ("textgen", "float32", False, True, "lstm", 0),
    # The default model's network, which also feeds the embedding to layer 2 and both layers to the output.
    "textgen + skip connections, default": ("textgen", "auto", True, True, "lstm", 0),
    "textgen + skip connections, float32": ("textgen", "float32", True, True, "lstm", 0),
    # textgen's default character model: that network with n-gram counts mixed in.
    "textgen + skip + counts, default": ("textgen", "auto", True, True, "lstm", CHAR_NGRAM_ORDER),
    "textgen + skip + counts, float32": ("textgen", "float32", True, True, "lstm", CHAR_NGRAM_ORDER),
    # The same with the cells that train a window as one scan, as many parameters as the LSTM.
    **{f"textgen {cell} + skip connections, {label}": ("textgen", precision, True, True, cell, 0)
       for cell in INPUT_GATED_CELLS for label, precision in (("default", "auto"), ("float32", "float32"))},
}


def run_contender(name: str, args: argparse.Namespace) -> float:
    """One timing, in the fresh process it is called in."""
    loop, precision, skip_connections, keep_memory, cell, ngram_order = CONTENDERS[name]
    if keep_memory:
        keep_freed_memory()
    corpus, ids, vocab = load_text()
    if loop == "bare":
        return bare_loop(ids, vocab, args, autocast=precision)
    return textgen_loop(corpus, vocab, args, precision, skip_connections, cell, ngram_order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="time these contenders alone (the bare float32 loop is always kept: the ratios are to it)")
    args = parser.parse_args()

    has_bf16 = training_dtype("auto", torch.device("cpu")) is not None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bfloat16 natively: {has_bf16}; "
          f"{args.layers} x {args.hidden} LSTM, batch {args.batch}, window {args.window}, {args.steps} steps per timing")
    vocab = load_text()[2]
    for cell in ("lstm", *INPUT_GATED_CELLS):
        shape = model_shape(cell, vocab, args)
        print(f"  textgen {cell} with skip connections: {shape.layers} x {shape.hidden_size}, "
              f"{RNNLanguageModel(shape).num_parameters():,} parameters")
    names = [name for name in CONTENDERS if has_bf16 or name != "bare nn.LSTM loop, bfloat16 autocast"]
    if args.only:
        unknown = set(args.only) - set(CONTENDERS)
        if unknown:
            parser.error(f"no contender named {sorted(unknown)[0]!r}; they are: {'; '.join(CONTENDERS)}")
        names = [name for name in names if name in args.only or name == "bare nn.LSTM loop, float32"]
    figures: dict[str, list[float]] = {name: [] for name in names}
    spawn = multiprocessing.get_context("spawn")
    for round_number in range(args.rounds):
        for name in names:
            with spawn.Pool(1) as pool:
                figures[name].append(pool.apply(run_contender, (name, args)))
        print(f"round {round_number + 1}: " + ", ".join(f"{name} {values[-1]:,.0f}" for name, values in figures.items()),
              flush=True)
    median = {name: statistics.median(values) for name, values in figures.items()}
    bare = median["bare nn.LSTM loop, float32"]
    print()
    for name, value in median.items():
        print(f"{name:<42} {value:>9,.0f} tokens/s   {value / bare:5.2f} x bare float32")
    print("\ntarget (issue 13): textgen + skip connections >= 1.5 x bare float32 where bfloat16 is native, and "
          ">= 1.0 x in float32 (textgen float32 stands for a CPU without bfloat16)")


if __name__ == "__main__":
    main()
