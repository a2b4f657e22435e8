"""Helpers shared by the benchmark scripts: where the benchmark text is, and running the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def require_shakespeare() -> Path:
    if not SHAKESPEARE.is_file():
        print(f"skipped: the benchmark text {SHAKESPEARE} is not here")
        sys.exit(0)
    return SHAKESPEARE


def textgen(*args: str) -> str:
    """Run the CLI as a user would and return its stdout; fail loudly if it fails."""
    done = subprocess.run([sys.executable, "-m", "textgen", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"textgen {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def train_and_evaluate(corpus: Path, *train_args: str) -> dict:
    """Train into a temporary checkpoint, then evaluate it on the held-out part."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "model"
        textgen("train", str(corpus), "--out", str(out), *train_args)
        return json.loads(textgen("evaluate", str(out), "--json"))
