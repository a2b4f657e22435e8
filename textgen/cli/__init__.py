"""The `textgen` command line: app.py (the commands and how errors end them), one module per
command (train, sample, evaluate, info), interactive.py (the prompt loop of `sample -i`)."""

from textgen.cli.app import app, main

__all__ = ["app", "main"]
