"""`textgen evaluate`: loss, perplexity and bits per character of a checkpoint on a text; several
checkpoints compared on one text; and views of what a model learnt (--memory, --show)."""

# Annotations are evaluated as the module loads, not postponed: Typer would otherwise compile and
# evaluate each option's annotation string again every time it starts, --help included.

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
    from textgen.devices import keep_freed_memory, resolve_device
    from textgen.evaluation import evaluate_text
    from textgen.render.console import console
    from textgen.render.tables import evaluation_table

    keep_freed_memory()  # scoring and --gradients free and take back the same large blocks

    if html is not None:
        from textgen.cli.files import check_output_file

        check_output_file(html, "--html")
        if text_file is None:
            raise TextgenError("--html reports on one text: give --text FILE")
    loaded = [load_checkpoint(path, resolve_device(device)) for path in checkpoints]
    text = read_text_file(Path(text_file), encoding) if text_file is not None else None
    asked = {"memory": memory, "gradients": gradients, "show": show, "cells": cells}
    # The report draws memory, gradients and cells whether or not the terminal is to show them;
    # each is computed once, for both.
    needed = {name: wanted or (html is not None and name != "show") for name, wanted in asked.items()}
    names = [str(path) for path in checkpoints]
    rows = None
    if len(loaded) > 1 or html is not None:
        from textgen.api import TextModel
        from textgen.insight import compare

        models = [(name, TextModel(each.model, each.tokenizer, each.info, path))
                  for name, each, path in zip(names, loaded, checkpoints)]
        rows = compare(models, text, unknown, label=text_file)
    if len(loaded) > 1 or html is not None:
        views = {name: _views(each, text, needed, unknown) for name, each in zip(names, loaded)}
        if html is not None:
            _write_report(html, rows, views, loaded, names, text, text_file)
        if len(loaded) > 1:
            _print_comparison(rows, views, asked, text_file, as_json)
            return
    first, checkpoint = loaded[0], checkpoints[0]
    record = first.info.corpus
    if text is None and record.streamed:
        result, what = _evaluate_streamed(first)
    else:
        if text is None:
            context, text, what = held_out_text(record, "give a FILE to evaluate")
        else:
            context, what = "", text_file
        result = evaluate_text(first.model, first.tokenizer, text, context, unknown, label=what)
    if result.tokens == 0:
        raise TextgenError(f"{what} is too short to score: it is a single token")
    if html is None:
        views = {names[0]: _views(first, text, needed, unknown) if text_file is not None else {}}
    if not views[names[0]]:  # the views read a --text; the held-out part is scored as validation was
        asked = dict.fromkeys(asked, False)
    if as_json:
        import json  # here, not at the top: `textgen --help` loads every command module

        typer.echo(json.dumps({"checkpoint": str(checkpoint), "text": what, **result.to_json(),
                               **_views_json(views[names[0]], asked)}))
        return
    console.print(evaluation_table(result, what))
    _print_views(views[names[0]], asked, names[0])


def _print_comparison(rows: list[Any], views: dict[str, Any], asked: dict[str, bool], what: str,
                      as_json: bool) -> None:
    from textgen.render.console import console
    from textgen.render.tables import comparison_table

    if as_json:
        import json

        typer.echo(json.dumps([{**row.to_json(), **_views_json(views[row.name], asked)} for row in rows]))
        return
    console.print(comparison_table(rows, what))
    for row in rows:
        _print_views(views[row.name], asked, row.name)


def _views(loaded: Any, text: str, needed: dict[str, bool], unknown: str) -> dict[str, Any]:
    """The insight views `needed`, as plain data: memory reach, gradient fade, per-token surprise,
    interpretable cells; and the text's ids, which the report reads again."""
    from textgen.insight import cell_report, gradient_fade, memory_reach, surprisal
    from textgen.tokenizers import encode_leniently

    if not any(needed.values()):
        return {}
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode(text) if unknown == "error" else encode_leniently(tokenizer, text, unknown)
    views: dict[str, Any] = {"ids": ids}
    if needed["memory"]:
        views["memory"] = memory_reach(loaded.model, ids, len(text) - len(tokenizer.decode(ids[:1])))
    if needed["gradients"]:
        views["gradients"] = gradient_fade(loaded.model, ids)
    if needed["show"]:
        views["show"] = surprisal(loaded.model, tokenizer, ids, top=0)
        views["first_token"] = tokenizer.token_text(ids[0]) if ids else ""
    if needed["cells"]:
        views["cells"] = cell_report(loaded.model, tokenizer, ids, tokenizer.decode(ids))
    return views


def _views_json(views: dict[str, Any], asked: dict[str, bool]) -> dict[str, Any]:
    """The views the user asked for, as JSON fields."""
    out: dict[str, Any] = {}
    if asked["memory"]:
        out["memory"] = [{"reset_every": p.reset_every, "bits_per_char": p.bits_per_char,
                          "nats_per_token": p.nats_per_token} for p in views["memory"]]
    if asked["gradients"]:
        out["gradients"] = [{"layer": fade.layer, "norms": fade.norms} for fade in views["gradients"]]
    if asked["show"]:
        out["surprisal_bits"] = [round(token.bits, 4) for token in views["show"]]
    if asked["cells"]:
        report = views["cells"]
        out["cells"] = {"best": [vars(match) for match in report.best],
                        "saturation": {gate: {"near_0": low, "near_1": high}
                                       for gate, (low, high) in report.saturation.items()}}
    return out


def _print_views(views: dict[str, Any], asked: dict[str, bool], name: str) -> None:
    from textgen.render.console import console
    from textgen.render.insight import cells_view, gradient_chart, memory_chart, surprise_text

    if asked["memory"]:
        console.print(memory_chart({name: views["memory"]}))
    if asked["gradients"]:
        console.print(gradient_chart({name: views["gradients"]}))
    if asked["show"]:
        console.print(surprise_text(views["show"], views["first_token"]))
    if asked["cells"]:
        console.print(cells_view(views["cells"], name))


def _evaluate_streamed(loaded: Any) -> tuple[Any, str]:
    """The held-out part of a corpus prepared into the id cache, scored as validation scored it."""
    from textgen.data.prepare import check_same_vocabulary, held_out, recorded_prepared
    from textgen.evaluation import held_out_loss, summarise

    record = loaded.info.corpus
    if record.val_fraction <= 0:
        raise TextgenError("this model was trained with no held-out text (--val-fraction 0); give a FILE to evaluate")
    prepared = recorded_prepared(record, loaded.info.tokenizer, "give a FILE to evaluate")
    check_same_vocabulary(prepared, loaded.tokenizer, loaded.path, "evaluate again")
    part = held_out(prepared)
    nats, count = held_out_loss(loaded.model, part)
    what = f"the held-out last {record.val_fraction:g} of {record.source}" + (f" ({part.note})" if part.note else "")
    return summarise(nats, count, part.characters), what


# The report colours this many tokens of the text, each with its tooltip: a page stays light.
REPORT_TOKENS = 3_000


def _write_report(path: Path, rows: list[Any], views: dict[str, Any], loaded: list[Any], names: list[str],
                  text: str, what: str) -> None:
    """Every view of every model on one page, drawn by render.html from what was computed."""
    from textgen.checkpoint import read_metrics
    from textgen.checkpoint.atomic import write_text
    from textgen.insight import surprisal
    from textgen.render.console import print_note
    from textgen.render.html import report_page

    first, ids = loaded[0], views[names[0]]["ids"]
    tokens = surprisal(first.model, first.tokenizer, ids[: REPORT_TOKENS + 1], top=5)  # with tooltips
    page = report_page(
        title=", ".join(names), subtitle=f"textgen evaluate on {what}", text_name=what, rows=rows,
        model_name=names[0], first_token=first.tokenizer.token_text(ids[0]), tokens=tokens,
        tokens_cut=len(ids) > REPORT_TOKENS + 1,
        metrics=read_metrics(first.path), memory={name: views[name]["memory"] for name in names},
        gradients={name: views[name]["gradients"] for name in names}, cells=views[names[0]]["cells"],
    )
    try:
        write_text(path, page)
    except OSError as error:
        raise TextgenError(f"could not write {path}: {error.strerror or error}") from None
    print_note(f"wrote the report to {path}")
