"""`textgen evaluate`: loss, perplexity and bits per character of a checkpoint on a text; several
checkpoints compared on one text; and views of what a model learnt (--memory, --show)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen.config import UNKNOWN_POLICIES
from textgen.errors import TextgenError


def evaluate(
    paths: Annotated[list[Path], typer.Argument(
        help="One checkpoint directory made by `textgen train`, or several to compare on one text (then give "
             "--text). After one checkpoint, a FILE to score may follow.", show_default=False, metavar="CHECKPOINT")],
    text_file: Annotated[Optional[str], typer.Option(
        "--text", help="Text to score. Default: the held-out part of the (one) model's training text.",
        show_default=False)] = None,
    memory: Annotated[bool, typer.Option(
        "--memory", help="Also bits per character with the hidden state reset every 1, 2, 4, ... tokens: how far "
                         "back each model uses its context.")] = False,
    gradients: Annotated[bool, typer.Option(
        "--gradients", help="Also the norm of the loss's gradient with respect to each layer's state k steps "
                            "back, k up to 200: the vanishing-gradient picture.")] = False,
    show: Annotated[bool, typer.Option(
        "--show", help="Also show the text coloured by how surprised the model is by each token.")] = False,
    cells: Annotated[bool, typer.Option(
        "--cells", help="Also the hidden units that track quotes, brackets, line position, word starts, case, "
                        "digits (and Chinese quotes and full stops), and how often each gate saturates.")] = False,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write one self-contained page with all of it: the comparison, the coloured text "
                       "(hover a token), training curves, memory reach, fading gradients and cells.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    encoding: Annotated[str, typer.Option(help="Encoding of the text file.")] = "utf-8",
    unknown: Annotated[str, typer.Option(
        help="Symbols of the text the model never saw: error (refuse, naming them) | skip (leave them out of the "
             "score) | replace (a stand-in the model knows; <unk> for a word model). The result says how many.")
    ] = "error",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Measure loss, perplexity and bits per character on a text; compare models; see what they learnt."""
    if unknown not in UNKNOWN_POLICIES:
        raise TextgenError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
    checkpoints = list(paths)
    if text_file is None and len(checkpoints) == 2 and not (checkpoints[1] / "config.json").is_file():
        text_file = str(checkpoints.pop())  # `textgen evaluate CHECKPOINT FILE`, as before --text
    if len(checkpoints) > 1 and text_file is None:
        raise TextgenError("comparing models needs one text for all of them: give --text FILE")
    from textgen.api import load_checkpoint
    from textgen.data.corpus import held_out_text, read_text_file
    from textgen.devices import resolve_device
    from textgen.evaluation import evaluate_text
    from textgen.render.console import console, evaluation_table

    if html is not None:
        from textgen.cli.files import check_output_file

        check_output_file(html, "--html")
        if text_file is None:
            raise TextgenError("--html reports on one text: give --text FILE")
    loaded = [load_checkpoint(path, resolve_device(device)) for path in checkpoints]
    text = read_text_file(Path(text_file), encoding) if text_file is not None else None
    if html is not None:
        _write_report(html, loaded, checkpoints, text, text_file, unknown)
    if len(loaded) > 1:
        _compare(loaded, checkpoints, text, text_file, unknown, (memory, gradients, show, cells), as_json)
        return
    first, checkpoint = loaded[0], checkpoints[0]
    record = first.info.corpus
    if text is None and record.streamed:
        result, what = _evaluate_streamed(first)
    else:
        if text is None:
            context, text, what = held_out_text(record)
        else:
            context, what = "", text_file
        result = evaluate_text(first.model, first.tokenizer, text, context, unknown, label=what)
    if result.tokens == 0:
        raise TextgenError(f"{what} is too short to score: it is a single token")
    views = _views(first, text, memory, gradients, show, cells, unknown) if text is not None else {}
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "text": what, **result.to_json(),
                               **{k: v for k, v in views.items() if k not in ("shown", "cell_report")}}))
        return
    console.print(evaluation_table(result, what))
    _print_views(views, str(checkpoint))


def _compare(loaded: list[Any], checkpoints: list[Path], text: str, what: str, unknown: str,
             asked: tuple[bool, bool, bool, bool], as_json: bool) -> None:
    from textgen.api import TextModel
    from textgen.insight import compare
    from textgen.render.console import comparison_table, console

    models = [(str(path), TextModel(each.model, each.tokenizer, each.info, path)) for path, each in zip(checkpoints, loaded)]
    rows = compare(models, text, unknown, label=what)
    views = {str(path): _views(each, text, *asked, unknown) for path, each in zip(checkpoints, loaded)}
    if as_json:
        typer.echo(json.dumps([{**row.to_json(), **{k: v for k, v in views[row.name].items() if k not in ("shown", "cell_report")}}
                               for row in rows]))
        return
    console.print(comparison_table(rows, what))
    for name in (row.name for row in rows):
        _print_views(views[name], name)


def _views(loaded: Any, text: str, memory: bool, gradients: bool, show: bool, cells: bool,
           unknown: str) -> dict[str, Any]:
    """The insight views asked for, as plain data: memory reach, gradient fade, per-token surprise,
    interpretable cells."""
    from textgen.insight import cell_report, gradient_fade, memory_reach, surprisal
    from textgen.tokenizers import encode_leniently

    if not (memory or gradients or show or cells):
        return {}
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode(text) if unknown == "error" else encode_leniently(tokenizer, text, unknown)
    characters = len(text) - len(tokenizer.decode(ids[:1]))
    views: dict[str, Any] = {}
    if memory:
        views["memory"] = [{"reset_every": p.reset_every, "bits_per_char": p.bits_per_char,
                            "nats_per_token": p.nats_per_token} for p in memory_reach(loaded.model, ids, characters)]
    if gradients:
        views["gradients"] = [{"layer": fade.layer, "norms": fade.norms} for fade in gradient_fade(loaded.model, ids)]
    if show:
        views["shown"] = surprisal(loaded.model, tokenizer, ids, top=0)
        views["surprisal_bits"] = [round(token.bits, 4) for token in views["shown"]]
    if cells:
        report = cell_report(loaded.model, tokenizer, ids, tokenizer.decode(ids))
        views["cell_report"] = report
        views["cells"] = {"best": [vars(match) for match in report.best],
                          "saturation": {gate: {"near_0": low, "near_1": high}
                                         for gate, (low, high) in report.saturation.items()}}
    return views


def _print_views(views: dict[str, Any], name: str) -> None:
    from textgen.insight import GradientFade, MemoryPoint
    from textgen.render.console import cells_view, console, gradient_chart, memory_chart, surprise_text

    if "memory" in views:
        points = [MemoryPoint(p["reset_every"], p["bits_per_char"], p["nats_per_token"]) for p in views["memory"]]
        console.print(memory_chart({name: points}))
    if "gradients" in views:
        console.print(gradient_chart({name: [GradientFade(g["layer"], g["norms"]) for g in views["gradients"]]}))
    if "shown" in views:
        console.print(surprise_text(views["shown"]))
    if "cell_report" in views:
        console.print(cells_view(views["cell_report"], name))


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


# The report colours this many tokens of the text, each with its tooltip: a page stays light.
REPORT_TOKENS = 3_000


def _write_report(path: Path, loaded: list[Any], checkpoints: list[Path], text: str, what: str, unknown: str) -> None:
    """Every view of every model on one page, computed here and drawn by render.html."""
    from textgen.api import TextModel
    from textgen.checkpoint import read_metrics
    from textgen.checkpoint.atomic import write_text
    from textgen.insight import cell_report, compare, gradient_fade, memory_reach, surprisal
    from textgen.render.console import print_note
    from textgen.render.html import report_page
    from textgen.tokenizers import encode_leniently

    names = [str(p) for p in checkpoints]
    rows = compare([(name, TextModel(each.model, each.tokenizer, each.info, p))
                    for name, each, p in zip(names, loaded, checkpoints)], text, unknown, label=what)
    memory, gradients = {}, {}
    for name, each in zip(names, loaded):
        ids = each.tokenizer.encode(text) if unknown == "error" else encode_leniently(each.tokenizer, text, unknown)
        memory[name] = memory_reach(each.model, ids, len(text) - len(each.tokenizer.decode(ids[:1])))
        gradients[name] = gradient_fade(each.model, ids)
    first = loaded[0]
    ids = first.tokenizer.encode(text) if unknown == "error" else encode_leniently(first.tokenizer, text, unknown)
    tokens = surprisal(first.model, first.tokenizer, ids[: REPORT_TOKENS + 1], top=5)
    page = report_page(
        title=", ".join(names), subtitle=f"textgen evaluate on {what}", text_name=what, rows=rows,
        model_name=names[0], tokens=tokens, tokens_cut=len(ids) > REPORT_TOKENS + 1, metrics=read_metrics(checkpoints[0]),
        memory=memory, gradients=gradients, cells=cell_report(first.model, first.tokenizer, ids, first.tokenizer.decode(ids)),
    )
    try:
        write_text(path, page)
    except OSError as error:
        raise TextgenError(f"could not write {path}: {error.strerror or error}") from None
    print_note(f"wrote the report to {path}")
