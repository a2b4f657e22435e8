"""The README's memory-reach and gradient-fade pictures, drawn by textgen's own chart code from
`textgen evaluate --memory --gradients --json` on checkpoints you trained.

    textgen train tinyshakespeare.txt --cell rnn-tanh --preset small --max-time 60 --out cmp/rnn-tanh
    textgen train tinyshakespeare.txt --cell gru --preset small --max-time 60 --out cmp/gru
    textgen train tinyshakespeare.txt --cell lstm --preset small --max-time 60 --out cmp/lstm
    python benchmarks/readme_charts.py HELD-OUT.txt cmp/rnn-tanh cmp/gru cmp/lstm

writes benchmarks/charts/memory-reach.svg and benchmarks/charts/gradient-fade.svg and prints the
comparison table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _common import ROOT

from textgen.render.html import line_chart


def main() -> None:
    held_out, checkpoints = sys.argv[1], sys.argv[2:]
    done = subprocess.run([sys.executable, "-m", "textgen", "evaluate", *checkpoints, "--text", held_out,
                           "--memory", "--gradients", "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout)
    out = ROOT / "benchmarks" / "charts"
    out.mkdir(exist_ok=True)
    name = {row["name"]: Path(row["name"]).name for row in rows}
    labels = ["never" if p["reset_every"] is None else f"{p['reset_every']:,}" for p in rows[0]["memory"]]
    memory = {name[row["name"]]: [(i, p["bits_per_char"]) for i, p in enumerate(row["memory"])] for row in rows}
    (out / "memory-reach.svg").write_text(
        line_chart(memory, "state reset every k tokens", "bits/char", x_labels=labels), encoding="utf-8")
    fade = {f"{name[row['name']]}, layer {g['layer'] + 1}": [(k, n) for k, n in enumerate(g["norms"]) if n > 0]
            for row in rows for g in row["gradients"]}
    (out / "gradient-fade.svg").write_text(
        line_chart(fade, "k (steps back)", "|d loss_t / d h_(t-k)|", log_y=True), encoding="utf-8")
    for row in rows:
        reach = {p["reset_every"]: p["bits_per_char"] for p in row["memory"]}
        norms = row["gradients"][-1]["norms"]
        print(f"{name[row['name']]:9s} {row['bits_per_char']:.4f} bits/char; reset every 1: {reach[1]:.3f}, "
              f"every 16: {reach[16]:.3f}, every 256: {reach[256]:.3f}, never: {reach[None]:.3f}; top layer's "
              f"gradient at k = 10, 50, 200 over k = 0: {norms[10] / norms[0]:.2e}, {norms[50] / norms[0]:.2e}, "
              f"{norms[-1] / norms[0]:.2e}")


if __name__ == "__main__":
    main()
