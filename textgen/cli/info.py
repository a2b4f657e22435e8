"""`textgen info`: what a checkpoint holds."""

# Annotations are evaluated as the module loads, not postponed: Typer would otherwise compile and
# evaluate each option's annotation string again every time it starts, --help included.

from pathlib import Path
from typing import Annotated

import typer


def info(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory made by `textgen train`.", show_default=False)],
) -> None:
    """Show what a checkpoint holds: model, tokenizer, corpus and best figures."""
    from textgen.api import load_checkpoint
    from textgen.checkpoint import read_metrics
    from textgen.render.console import console
    from textgen.render.tables import run_report

    loaded = load_checkpoint(checkpoint)
    console.print(run_report(checkpoint, loaded.info, loaded.model.num_parameters(), read_metrics(checkpoint)))
