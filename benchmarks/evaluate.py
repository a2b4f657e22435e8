"""How fast the views of `textgen evaluate` are: evaluation tokens per second beside training tokens
per second for the same model, and the seconds each view takes on tiny Shakespeare's held-out
part (111,540 characters) for a 2 x 512 char LSTM, in one run.

    python benchmarks/evaluate.py

Targets on a 2-core CPU: evaluation at least 10 times the training tokens per second, and each
view under 10 s.

It also prints the arithmetic rate of both (GFLOP/s, counting two operations per weight of a
matrix product per token forward and three times that for a training step), since a forward pass
is a third of a training step's arithmetic: where both already run near the CPU's peak, the ratio
cannot go much beyond 3 in the same precision.
"""

from __future__ import annotations

import os
import time

import torch
from _common import require_shakespeare

from textgen.config import ModelConfig, TrainConfig
from textgen.data import split_text
from textgen.evaluation import total_loss
from textgen.insight import cell_report, gradient_fade, memory_reach, surprisal
from textgen.model import RNNLanguageModel
from textgen.tokenizers import CharTokenizer
from textgen.training.optimization import make_optimizer


def main() -> None:
    text = require_shakespeare().read_text(encoding="utf-8")
    train_text, held_out = split_text(text, 0.1)
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden_size=512,
                                         embedding_size=128))
    ids = tokenizer.encode(held_out)
    print(f"2 x 512 char LSTM, {len(held_out):,} held-out characters; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)

    # Training speed of the same model, float32, 32 rows x 64 tokens (the medium preset's shape).
    train_ids = torch.tensor(tokenizer.encode(train_text[:200_000]))
    optimizer = make_optimizer(model, TrainConfig())
    rows, window = 32, 64
    batch = train_ids[: rows * (window + 1) * 10].view(rows, -1)
    model.train()
    steps, started, state = 0, None, None
    for position in range(0, batch.shape[1] - window - 1, window):
        if steps == 2:
            started = time.perf_counter()  # after two warm-up steps
        logits, state = model(batch[:, position:position + window], state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, position + 1:position + window + 1].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = tuple(s.detach() for s in state)
        steps += 1
    training = (steps - 2) * rows * window / (time.perf_counter() - started)
    model.eval()

    timings = {}
    started = time.perf_counter()
    total_loss(model, torch.tensor(ids))
    timings["evaluate (the whole held-out part)"] = time.perf_counter() - started
    evaluation = len(ids) / timings["evaluate (the whole held-out part)"]
    for name, view in (("--memory", lambda: memory_reach(model, ids, len(held_out) - 1)),
                       ("--gradients", lambda: gradient_fade(model, ids)),
                       ("--show", lambda: surprisal(model, tokenizer, ids, top=0)),
                       ("--cells", lambda: cell_report(model, tokenizer, ids, held_out))):
        started = time.perf_counter()
        view()
        timings[name] = time.perf_counter() - started
    forward_flops = 2 * sum(p.numel() for name, p in model.named_parameters()
                            if p.dim() == 2 and not name.startswith("embedding"))
    print(f"training   {training:10,.0f} tokens/s   {3 * forward_flops * training / 1e9:5.0f} GFLOP/s (float32)")
    print(f"evaluation {evaluation:10,.0f} tokens/s   {forward_flops * evaluation / 1e9:5.0f} GFLOP/s (float32)   "
          f"{evaluation / training:5.1f} x training (target 10)")
    for name, seconds in timings.items():
        print(f"{name:36s} {seconds:6.2f} s  (target 10 s)")


if __name__ == "__main__":
    main()
