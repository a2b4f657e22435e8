"""Sampling speed: textgen's sampler beside the bare ways of stepping an LSTM, and the time
`textgen sample` takes to print its first character.

    python benchmarks/sampling.py

Prints, in one run: characters per second of textgen (the Python API the CLI uses) for one sample
and for 16 in one batch; the bare loops it should beat (nn.LSTM called one step at a time with
oneDNN on and off, the step written with cached pre-transposed matrices and a per-token input
table, for 1 and 16 samples); re-feeding the whole text for every new token at 500 and 2,000
characters; the same two textgen figures with the default's n-gram counts mixed in and for the
other cells at the same shape (GRU, minGRU, minLSTM); and the startup of `textgen sample` to its first character. The model is a randomly
initialised 2 x 512 char LSTM with tiny Shakespeare's 65 symbols: speed does not depend on the
weights. Every loop draws with temperature 0.8; textgen also applies top-k 40 (its default).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from _common import ROOT, SHAKESPEARE

import textgen
from textgen.checkpoint import CheckpointInfo, save_checkpoint
from textgen.config import CELL_LABELS, CHAR_NGRAM_ORDER, ModelConfig, TokenizerConfig
from textgen.model import RNNLanguageModel
from textgen.model.ngram import NGramCounts
from textgen.tokenizers import CharTokenizer

SHAKESPEARE_SYMBOLS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TEMPERATURE = 0.8


def best_rate(run: Callable[[], int], repeats: int = 3) -> float:
    """Characters per second of the fastest of `repeats` runs (the machine is shared and noisy)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        characters = run()
        rates.append(characters / (time.perf_counter() - started))
    return max(rates)


def nn_lstm_steps(model: RNNLanguageModel, onednn: bool, steps: int) -> int:
    """model(token, state) one token at a time: nn.LSTM called once per character."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    try:
        with torch.inference_mode():
            token, state = torch.zeros(1, 1, dtype=torch.long), None
            for _ in range(steps):
                logits, state = model(token, state)
                token = torch.multinomial(torch.softmax(logits[:, -1] / TEMPERATURE, dim=-1), 1)
    finally:
        torch.backends.mkldnn.enabled = previous
    return steps


def cached_matrix_steps(model: RNNLanguageModel, batch: int, steps: int) -> int:
    """The LSTM step written out with addmm on matrices transposed once, the first layer's input
    projection looked up per token: the usual hand-written fast loop."""
    rnn, hidden = model.rnn, model.config.hidden_size
    with torch.inference_mode():
        table = model.embedding.weight @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0 + rnn.bias_hh_l0
        w_hh = [getattr(rnn, f"weight_hh_l{k}").t().contiguous() for k in range(2)]
        w_ih1 = rnn.weight_ih_l1.t().contiguous()
        bias1 = rnn.bias_ih_l1 + rnn.bias_hh_l1
        w_out, b_out = model.decoder.weight.t().contiguous(), model.decoder.bias
        h = [torch.zeros(batch, hidden) for _ in range(2)]
        c = [torch.zeros(batch, hidden) for _ in range(2)]
        tokens = torch.zeros(batch, dtype=torch.long)
        for _ in range(steps):
            x = None
            for k in range(2):
                inputs = table[tokens] if k == 0 else torch.addmm(bias1, x, w_ih1)
                i, f, g, o = torch.addmm(inputs, h[k], w_hh[k]).chunk(4, dim=1)
                c[k] = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
                h[k] = x = torch.sigmoid(o) * torch.tanh(c[k])
            logits = torch.addmm(b_out, x, w_out)
            tokens = torch.multinomial(torch.softmax(logits / TEMPERATURE, dim=-1), 1).view(-1)
    return steps * batch


def refeed_steps(model: RNNLanguageModel, at_length: int, steps: int) -> int:
    """The tutorial way: run the model over the whole text for every new token (no state kept)."""
    ids = torch.randint(0, model.config.vocab_size, (1, at_length))
    with torch.inference_mode():
        for _ in range(steps):
            logits, _ = model(ids)
            token = torch.multinomial(torch.softmax(logits[:, -1] / TEMPERATURE, dim=-1), 1)
            ids = torch.cat([ids, token], dim=1)
    return steps


def startup_to_first_character(checkpoint: Path) -> float:
    """Seconds from starting `textgen sample` to reading its first generated character."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "sample", str(checkpoint), "--length", "50", "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first = process.stdout.read(1)
    elapsed = time.perf_counter() - started
    process.communicate()
    if process.returncode != 0 or not first:
        sys.exit(f"textgen sample failed ({process.returncode})")
    return elapsed


def machine() -> str:
    model_name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model_name}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


def saved_and_loaded(folder: str, name: str, model: RNNLanguageModel, tokenizer: CharTokenizer):
    """Save `model` as a checkpoint, load it the way `textgen sample` does, and build its fast step
    once (as the CLI does per run); returns the checkpoint's path and the loaded model."""
    checkpoint = Path(folder) / name
    save_checkpoint(checkpoint, model, tokenizer, CheckpointInfo(model=model.config, tokenizer=TokenizerConfig()), [])
    loaded = textgen.load(checkpoint, device="cpu")
    loaded.generate("ROMEO:", length=100, seed=0)
    return checkpoint, loaded


def counted_text(tokenizer: CharTokenizer) -> torch.Tensor:
    """What the default's n-gram counts are taken from: tiny Shakespeare's training part where it
    is here (the tables' sizes, and so their lookups, follow the text), else a million symbols
    drawn at random, whose tables are larger."""
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")
        return torch.tensor(tokenizer.encode(text[: len(text) * 9 // 10]))
    return torch.randint(0, tokenizer.vocab_size, (1_000_000,), generator=torch.Generator().manual_seed(0))


def main() -> None:
    tokenizer = CharTokenizer.from_text(SHAKESPEARE_SYMBOLS)
    # Without skip connections, so the bare loops below compute exactly what the model does; the
    # default model's skip connections are timed on their own line.
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=2, hidden_size=512, embedding_size=128,
                         skip_connections=False)
    torch.manual_seed(0)
    model = RNNLanguageModel(config).eval()
    print(f"machine: {machine()}")
    print(f"model: randomly initialised {config.layers} x {config.hidden_size} char LSTM "
          f"({sum(p.numel() for p in model.parameters()):,} parameters), vocabulary {config.vocab_size}; "
          f"temperature {TEMPERATURE}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint, ours = saved_and_loaded(folder, "random-lstm", model, tokenizer)
        one = best_rate(lambda: len(ours.generate("ROMEO:", length=2000, seed=1)))
        batch = best_rate(lambda: sum(map(len, ours.generate_many("ROMEO:", 16, length=500, seed=1))))
        print(f"textgen, 1 sample (top-k 40, {ours.step.kind} step):   {one:8,.0f} chars/s   (target 4,000)")
        print(f"textgen, 16 samples in one batch:            {batch:8,.0f} chars/s in total   (target 12,000)",
              flush=True)
        skip_model = RNNLanguageModel(dataclasses.replace(config, skip_connections=True)).eval()
        _, skip = saved_and_loaded(folder, "random-lstm-skip", skip_model, tokenizer)
        skip_one = best_rate(lambda: len(skip.generate("ROMEO:", length=2000, seed=1)))
        print(f"the same with skip connections: {skip_one:21,.0f} chars/s", flush=True)
        counted = RNNLanguageModel(dataclasses.replace(config, skip_connections=True,
                                                       ngram_order=CHAR_NGRAM_ORDER)).eval()
        counted.attach_counts(NGramCounts.count(counted_text(tokenizer), tokenizer.vocab_size, CHAR_NGRAM_ORDER))
        _, mixed = saved_and_loaded(folder, "random-lstm-counts", counted, tokenizer)
        mixed_one = best_rate(lambda: len(mixed.generate("ROMEO:", length=2000, seed=1)))
        mixed_batch = best_rate(lambda: sum(map(len, mixed.generate_many("ROMEO:", 16, length=500, seed=1))))
        print(f"{f'and {CHAR_NGRAM_ORDER}-gram counts mixed in (the default), 1; 16:':44} {mixed_one:8,.0f}; "
              f"{mixed_batch:,.0f} chars/s", flush=True)

        for cell in ("gru", "mingru", "minlstm"):
            other_model = RNNLanguageModel(dataclasses.replace(config, cell=cell)).eval()
            _, other = saved_and_loaded(folder, f"random-{cell}", other_model, tokenizer)
            other_one = best_rate(lambda: len(other.generate("ROMEO:", length=2000, seed=1)))
            other_batch = best_rate(lambda: sum(map(len, other.generate_many("ROMEO:", 16, length=500, seed=1))))
            parameters = sum(p.numel() for p in other_model.parameters())
            print(f"{f'{CELL_LABELS[cell]} ({parameters:,} parameters), 1; 16 in a batch:':44} {other_one:8,.0f}; "
                  f"{other_batch:,.0f} chars/s", flush=True)

        rows = [
            ("bare nn.LSTM step, oneDNN on", lambda: nn_lstm_steps(model, True, 100)),
            ("bare nn.LSTM step, oneDNN off", lambda: nn_lstm_steps(model, False, 600)),
            ("bare cached-matrix step, 1 sample", lambda: cached_matrix_steps(model, 1, 2000)),
            ("bare cached-matrix step, 16 in a batch", lambda: cached_matrix_steps(model, 16, 500)),
        ]
        for label, run in rows:
            print(f"{label + ':':44} {best_rate(run):8,.0f} chars/s", flush=True)
        for length, steps in ((500, 20), (2000, 5)):
            rate = best_rate(lambda: refeed_steps(model, length, steps), repeats=2)
            print(f"{f're-feed the whole text, at {length:,} chars:':44} {rate:8,.1f} chars/s", flush=True)

        startups = [startup_to_first_character(checkpoint) for _ in range(3)]
        print(f"{'startup of `textgen sample` to 1st char:':44} {statistics.median(startups):8.2f} s "
              f"(median of 3; best {min(startups):.2f} s; target 2.5 s)")


if __name__ == "__main__":
    main()
