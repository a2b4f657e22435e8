"""`textgen evaluate`: loss, perplexity and bits per character of a checkpoint on a text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen.config import UNKNOWN_POLICIES
from textgen.errors import TextgenError


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory made by `textgen train`.", show_default=False)],
    file: Annotated[Optional[str], typer.Argument(
        help="Text to score. Default: the held-out part of the training text.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    encoding: Annotated[str, typer.Option(help="Encoding of FILE.")] = "utf-8",
    unknown: Annotated[str, typer.Option(
        help="Symbols of FILE the model never saw: error (refuse, naming them) | skip (leave them out of the "
             "score) | replace (a stand-in the model knows; <unk> for a word model). The result says how many.")
    ] = "error",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Measure loss, perplexity and bits per character on a text."""
    if unknown not in UNKNOWN_POLICIES:
        raise TextgenError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
    from textgen.api import load_checkpoint
    from textgen.render.console import console, evaluation_table
    from textgen.data.corpus import held_out_text, read_text_file
    from textgen.devices import resolve_device
    from textgen.evaluation import evaluate_text

    loaded = load_checkpoint(checkpoint, resolve_device(device))
    record = loaded.info.corpus
    if file is None and record.streamed:
        result, what = _evaluate_streamed(loaded)
    else:
        if file is None:
            context, text, what = held_out_text(record)
        else:
            context, text, what = "", read_text_file(Path(file), encoding), file
        result = evaluate_text(loaded.model, loaded.tokenizer, text, context, unknown, label=what)
    if result.tokens == 0:
        raise TextgenError(f"{what} is too short to score: it is a single token")
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "text": what, **result.to_json()}))
    else:
        console.print(evaluation_table(result, what))


def _evaluate_streamed(loaded: Any) -> tuple[Any, str]:
    """The held-out part of a corpus prepared into the id cache, scored as validation scored it."""
    import torch

    from textgen.data.corpus import corpus_cache_dir
    from textgen.data.prepare import held_out, prepare, recorded_files
    from textgen.evaluation import summarise, total_loss

    record = loaded.info.corpus
    if record.val_fraction <= 0:
        raise TextgenError("this model was trained with no held-out text (--val-fraction 0); give a FILE to evaluate")
    prepared = prepare(recorded_files(record, "give a FILE to evaluate"), loaded.info.tokenizer, record.val_fraction,
                       corpus_cache_dir())
    if prepared.sha256 != record.sha256:
        raise TextgenError(f"the training text {record.source} has changed since training; give a FILE to evaluate")
    part = held_out(prepared)
    nats, count = total_loss(loaded.model, torch.from_numpy(part.ids), part.context_id)
    what = f"the held-out last {record.val_fraction:g} of {record.source}" + (f" ({part.note})" if part.note else "")
    return summarise(nats, count, part.characters), what
