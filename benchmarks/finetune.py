"""Fine-tuning against training from scratch on a small text (issue 23), both sides in one run.

    python benchmarks/finetune.py [--scale 0.05] [--rates 0.1,0.3,1] [--small-kb 50] [--threads N] [--work DIR]
                                  [-- more train options for the fine-tuning runs]

Two setups, each scored in nats per character on the same held-out text, the last 10% of tiny
Shakespeare:
  1. same language and style: a base trained 300 s on the first 80% of tiny Shakespeare; the
     small text is the 50 KB after it. Scratch on the small text for 60 s; the base alone; the
     base fine-tuned on the small text for 60 s (`textgen train --init-from`).
  2. another domain: a base trained 300 s on the built-in python-docs corpus, fine-tuned 60 s on
     the same 50 KB, against the same scratch run.
Targets: in setup 1 fine-tuning beats scratch by 0.3 nats/char and beats the base alone; in
setup 2 it beats scratch by 0.1. It prints the table, a sample of the scratch model and of the
fine-tuned one side by side, and the machine.

--rates compares fine-tuning peak rates in one run, as ratios of the base's own peak rate (the
product's default, textgen.config.FINE_TUNING_LEARNING_RATE_RATIO, is always among them); each
ratio costs one 60 s run per setup. --scale multiplies every budget (0.05 checks the script
runs in about a minute; its figures mean nothing). Symbols of the held-out text a model never saw
are replaced by stand-ins (`unknown="replace"`) and counted in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from contextlib import nullcontext
import textwrap
from pathlib import Path

from _common import require_shakespeare
from quality import textgen as textgen_cli  # the CLI on N threads, as a user runs it

import textgen
from textgen.config import FINE_TUNING_LEARNING_RATE_RATIO

BASE_SECONDS, SMALL_SECONDS = 300.0, 60.0
TARGETS = {"same style": 0.3, "another domain": 0.1}  # nats/char fine-tuning must gain over scratch
PROMPT, SAMPLE_LENGTH, SAMPLE_SEED = "ROMEO:", 360, 7


def main() -> None:
    options = parse_arguments()
    text = require_shakespeare().read_text(encoding="utf-8")
    ratios = sorted({FINE_TUNING_LEARNING_RATE_RATIO, *options.rates})
    with nullcontext(str(options.work)) if options.work else tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        files = split_shakespeare(text, work, options.small_kb * 1000)
        held_out = files["held-out"].read_text(encoding="utf-8")
        train = lambda *args: textgen_cli(options.threads, "train", *args)  # noqa: E731
        budget = lambda seconds: ["--max-time", f"{seconds * options.scale:g}"]  # noqa: E731

        train(str(files["small"]), "--out", str(work / "scratch"), "--overwrite", *budget(SMALL_SECONDS))
        for base, corpus in (("base-shakespeare", [str(files["base"])]), ("base-docs", [])):  # [] = python-docs
            if not (options.work and (work / base / "config.json").is_file()):  # kept from an earlier run
                train(*corpus, "--out", str(work / base), "--overwrite", *budget(BASE_SECONDS))
        scores = {"scratch": score(work / "scratch", held_out)}
        rows = [("both", "scratch on the small text", scores["scratch"])]
        for setup, base in (("same style", "base-shakespeare"), ("another domain", "base-docs")):
            if setup == "same style":
                rows.append((setup, "the base alone", score(work / base, held_out)))
            for ratio in ratios:
                out = work / f"{base}-tuned-{ratio:g}"
                rate = base_rate(work / base) * ratio
                train(str(files["small"]), "--init-from", str(work / base), "--out", str(out), "--overwrite",
                      "--learning-rate", f"{rate:.6g}", *budget(SMALL_SECONDS), *options.tuning)
                rows.append((setup, f"fine-tuned, peak rate x{ratio:g} ({rate:.2g})", score(out, held_out)))
        print_table(rows, scores["scratch"], ratios)
        print_samples(f"{SMALL_SECONDS * options.scale:g} s", work / "scratch",
                      work / f"base-shakespeare-tuned-{FINE_TUNING_LEARNING_RATE_RATIO:g}",
                      work / f"base-docs-tuned-{FINE_TUNING_LEARNING_RATE_RATIO:g}")
    threads = f", every command on {options.threads} threads" if options.threads else ""
    print(f"\nmachine: {machine()}{threads}; budgets x{options.scale:g} (base {BASE_SECONDS * options.scale:g} s, "
          f"small text {SMALL_SECONDS * options.scale:g} s)")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget (0.05: a quick check)")
    parser.add_argument("--rates", type=lambda value: [float(v) for v in value.split(",") if v], default=[],
                        help="peak-rate ratios to compare, comma-separated (the default ratio is always run)")
    parser.add_argument("--small-kb", type=int, default=50, help="size of the small text, in thousands of characters")
    parser.add_argument("--threads", type=int, default=None, help="run every command on this many threads")
    parser.add_argument("--work", type=Path, help="keep the checkpoints in this folder, and reuse the two bases "
                                                  "found there (trying fine-tuning settings costs no base runs)")
    parser.add_argument("tuning", nargs="*", help="after --: more textgen train options for the fine-tuning runs")
    return parser.parse_args()


def split_shakespeare(text: str, folder: Path, small_characters: int) -> dict[str, Path]:
    """The base's text (the first 80%), the small text (what follows, `small_characters` long) and
    the held-out text (the last 10%), as files."""
    base_end, held_out_start = int(len(text) * 0.8), int(len(text) * 0.9)
    small_end = min(base_end + small_characters, held_out_start)
    parts = {"base": text[:base_end], "small": text[base_end:small_end], "held-out": text[held_out_start:]}
    files = {}
    for name, part in parts.items():
        files[name] = folder / f"{name}.txt"
        files[name].write_text(part, encoding="utf-8")
    return files


def base_rate(checkpoint: Path) -> float:
    return json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))["training"]["learning_rate"]


def score(checkpoint: Path, held_out: str) -> dict:
    result = textgen.load(checkpoint, device="cpu").evaluate(held_out, unknown="replace")
    nats_per_char = result.bits_per_char * 0.6931471805599453
    return {"nats_per_char": nats_per_char, "unseen": result.unseen}


def print_table(rows: list[tuple[str, str, dict]], scratch: dict, ratios: list[float]) -> None:
    print(f"{'setup':<15} {'model':<42} {'nats/char':>9} {'vs scratch':>10} {'unseen':>7}")
    for setup, what, figures in rows:
        gain = scratch["nats_per_char"] - figures["nats_per_char"]
        print(f"{setup:<15} {what:<42} {figures['nats_per_char']:>9.3f} {gain:>+10.3f} {figures['unseen']:>7,}")
    default = f"x{FINE_TUNING_LEARNING_RATE_RATIO:g}"
    for setup, target in TARGETS.items():
        tuned = next(f for s, what, f in rows if s == setup and default in what)
        gain = scratch["nats_per_char"] - tuned["nats_per_char"]
        verdict = "met" if gain >= target else "NOT met"
        extra = ""
        if setup == "same style":
            alone = next(f for s, what, f in rows if what == "the base alone")["nats_per_char"]
            beats = tuned["nats_per_char"] < alone
            verdict = "met" if gain >= target and beats else "NOT met"
            extra = f", and {'beats' if beats else 'does not beat'} the base alone"
        print(f"target, {setup}: fine-tuned (rate {default}) beats scratch by {target} nats/char: "
              f"{gain:+.3f}{extra}: {verdict}")


def print_samples(budget: str, scratch: Path, *tuned: Path) -> None:
    """The scratch model's sample beside each fine-tuned one, in two columns."""
    def sample(checkpoint: Path) -> str:
        return PROMPT + textgen.load(checkpoint, device="cpu").generate(PROMPT, length=SAMPLE_LENGTH,
                                                                        seed=SAMPLE_SEED)

    width = 48
    for checkpoint in tuned:
        left, right = (column(sample(c), width) for c in (scratch, checkpoint))
        print(f"\n{'from scratch, ' + budget:<{width}} | {checkpoint.name}, {budget}")
        for line in range(max(len(left), len(right))):
            pick = lambda lines: lines[line] if line < len(lines) else ""  # noqa: E731
            print(f"{pick(left):<{width}} | {pick(right)}")


def column(text: str, width: int) -> list[str]:
    return [piece for line in text.splitlines() for piece in (textwrap.wrap(line, width) or [""])]


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
