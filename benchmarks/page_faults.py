"""How many pages the kernel must fault in for work that takes and frees the same big blocks over
and over, with glibc's allocator as it comes and with the freed memory kept
(textgen.devices.keep_freed_memory, which `textgen train` calls): minor page faults and
milliseconds per round, each setting in a fresh process, in one run.

    python benchmarks/page_faults.py [ROUNDS]

Two kinds of round: a 64 MiB block taken, filled and freed (over glibc's largest mmap threshold,
so by default it is mapped afresh every time), and a float32 training step of a 2 x 512 char LSTM
on a 64 x 64 batch, the model of the page-fault entry in benchmarks/README.md. Where the setting
works, the kept rows show next to no faults once the first rounds have settled; off glibc it
changes nothing and both rows of a kind should match.

This was a pass/fail test until fault counts proved to depend on the kernel, the C library and
whatever else the machine was doing; the test suite now only checks which settings are asked for.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

BLOCK_FLOATS = 16 << 20  # 64 MiB of float32
# Rounds run before counting: glibc settles on a layout for a repeated size within a few rounds,
# as a training run does after its first steps.
SETTLING_ROUNDS = {"block": 30, "step": 3}
KINDS = {"block": "64 MiB block filled and freed", "step": "training step, 2 x 512 LSTM"}
ALLOCATORS = {"default": "as glibc leaves it", "kept": "freed memory kept"}


def block_round() -> Callable[[], None]:
    import torch

    def fill_a_block() -> None:
        torch.empty(BLOCK_FLOATS).fill_(1.0)

    return fill_a_block


def training_step_round() -> Callable[[], None]:
    import torch

    from textgen.config import ModelConfig
    from textgen.model import RNNLanguageModel

    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=65, layers=2, hidden_size=512, embedding_size=128)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 65, (64, 65))

    def step() -> None:
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(kind: str, allocator: str, rounds: int) -> dict:
    """Run in a fresh process: faults and seconds over `rounds` rounds of `kind`, after settling."""
    from textgen.devices import keep_freed_memory

    kept = keep_freed_memory() if allocator == "kept" else False
    work = block_round() if kind == "block" else training_step_round()
    for _ in range(SETTLING_ROUNDS[kind]):
        work()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(rounds):
        work()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {"kept": kept, "faults": faults, "seconds": seconds}


def in_fresh_process(kind: str, allocator: str, rounds: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", kind, allocator, str(rounds)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"measuring {kind} with the allocator {allocator} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        kind, allocator, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(measure(kind, allocator, rounds)))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"{rounds} rounds each, counted after the first ones settle; each row in a fresh process", flush=True)
    for kind, kind_label in KINDS.items():
        for allocator, allocator_label in ALLOCATORS.items():
            figures = in_fresh_process(kind, allocator, rounds)
            took_effect = "" if allocator == "default" or figures["kept"] else "  (no effect here: not glibc)"
            print(f"{kind_label:30s} {allocator_label:19s} {figures['faults'] / rounds:>10,.0f} faults/round "
                  f"{1000 * figures['seconds'] / rounds:>9,.1f} ms/round{took_effect}", flush=True)


if __name__ == "__main__":
    main()
