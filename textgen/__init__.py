"""textgen: train character-, word- or subword-level recurrent language models on your own text.

    from textgen import load
    model = load("checkpoints/shakespeare")
    model.generate("ROMEO:", length=300, temperature=0.8, top_k=40)

Importing textgen imports no torch (the CLI answers --help at once); load() brings it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from textgen.api import TextModel


def load(path: str | Path, device: str = "auto") -> TextModel:
    """Load a checkpoint directory made by `textgen train` as a TextModel (see textgen.api)."""
    from textgen.api import load as load_model

    return load_model(path, device)


def __getattr__(name: str) -> Any:
    if name == "TextModel":
        from textgen.api import TextModel

        return TextModel
    raise AttributeError(f"module 'textgen' has no attribute {name!r}")
