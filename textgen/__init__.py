"""textgen: train character-, word- or subword-level recurrent language models on your own text.

    from textgen import load
    model = load("checkpoints/shakespeare")
    model.generate("ROMEO:", length=300, temperature=0.8, top_k=40)

Importing textgen imports no torch (the CLI answers --help at once); load() brings it in.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Not `from typing import TYPE_CHECKING`: typing takes 20 ms to import, and everything imported
# before textgen.cli.main runs is time in which a Ctrl-C would end the program with a traceback.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

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
