"""`textgen sample`: continue a seed phrase from a checkpoint, streamed to the terminal, as JSON,
into a file, or in an interactive prompt loop."""

# Annotations are evaluated as the module loads, not postponed: Typer would otherwise compile and
# evaluate each option's annotation string again every time it starts, --help included.

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen.config import SampleConfig, sample_settings, unescape
from textgen.cli.files import check_output_file
from textgen.errors import TextgenError

_sample = SampleConfig()
_help = {setting.name: setting.metadata["help"] for setting in sample_settings()}
SAMPLING, STOPPING, SAMPLE_OUTPUT = "Sampling", "Length and stops", "Output"


def sample(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory made by `textgen train`.", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Seed phrase the text continues.")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help=_help["length"],
                                        rich_help_panel=STOPPING)] = _sample.length,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help=_help["stop"], rich_help_panel=STOPPING,
                                                      show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help=_help["temperature"],
                                               rich_help_panel=SAMPLING)] = _sample.temperature,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help=_help["top_k"],
                                       rich_help_panel=SAMPLING)] = _sample.top_k,
    top_p: Annotated[float, typer.Option("--top-p", help=_help["top_p"],
                                         rich_help_panel=SAMPLING)] = _sample.top_p,
    greedy: Annotated[bool, typer.Option("--greedy", help=_help["greedy"],
                                         rich_help_panel=SAMPLING)] = _sample.greedy,
    repetition_penalty: Annotated[float, typer.Option(
        "--repetition-penalty", help=_help["repetition_penalty"], rich_help_panel=SAMPLING)] = _sample.repetition_penalty,
    seed: Annotated[Optional[int], typer.Option(help=_help["seed"], rich_help_panel=SAMPLING,
                                                show_default=False)] = None,
    unknown: Annotated[str, typer.Option(help=_help["unknown"], rich_help_panel=SAMPLING)] = _sample.unknown,
    num_samples: Annotated[int, typer.Option(help=_help["num_samples"],
                                             rich_help_panel=SAMPLE_OUTPUT)] = _sample.num_samples,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the samples to this file instead.",
                                                   rich_help_panel=SAMPLE_OUTPUT, show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: samples, settings, seed.",
                                          rich_help_panel=SAMPLE_OUTPUT)] = False,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="A prompt loop: type seed phrases, "
                                              "change settings with :commands (:help lists them).",
                                              rich_help_panel=SAMPLE_OUTPUT)] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Generate text from a checkpoint, continuing a seed phrase."""
    config = _sample_config(locals())
    if interactive and (as_json or output is not None or num_samples > 1):
        raise TextgenError("--interactive writes one sample at a time to the terminal; leave out "
                           "--json, --output and --num-samples")
    if output is not None:
        check_output_file(output, "--output")
    from textgen.api import load
    from textgen.sampling import resolve_seed

    model = load(checkpoint, device)
    model.check_prompt(prompt, config.unknown)  # unseen symbols fail before anything is printed
    if interactive:
        from textgen.cli.interactive import run_interactive

        run_interactive(model, config, first_prompt=prompt or None)
        return
    config = dataclasses.replace(config, seed=resolve_seed(config.seed))  # known, so it can be reported
    pieces = model.stream_samples(prompt, config)
    if as_json or output is not None:
        texts = [""] * num_samples
        for piece in pieces:
            texts[piece.index] += piece.text
        _write_samples(texts, checkpoint, prompt, config, as_json, output)
    elif model.documents != "none":
        _show_documents(pieces, prompt, config, model.documents)
    else:
        _show_samples(pieces, prompt, config)


def _sample_config(options: dict[str, Any]) -> SampleConfig:
    """The SampleConfig the options ask for, checked: every option named after a SampleConfig field
    sets it; stop texts are typed with escapes (\\n)."""
    given = {setting.name: options[setting.name] for setting in sample_settings() if setting.name in options}
    given["stop"] = tuple(unescape(text) for text in given.get("stop") or ())
    return SampleConfig(**given)


def _show_documents(pieces: Iterator[Any], prompt: str, config: SampleConfig, documents: str) -> None:
    """Whole documents in order, one per line (or paragraph), each as soon as those before it are done."""
    from textgen.render.console import write_piece

    texts = [""] * config.num_samples
    done = [False] * config.num_samples
    shown = 0
    separator = "\n" if documents == "lines" else "\n\n"
    for piece in pieces:
        texts[piece.index] += piece.text
        done[piece.index] = done[piece.index] or piece.finished
        while shown < len(texts) and done[shown]:
            write_piece(prompt + texts[shown] + separator)
            shown += 1


def _show_samples(pieces: Iterator[Any], prompt: str, config: SampleConfig) -> None:
    """One sample streams as it is made; several grow side by side in a terminal, and elsewhere
    (or when too many for columns) each is printed whole as soon as it is finished."""
    from textgen.render.console import console, write_piece
    from textgen.render.samples import SideBySide, fits_side_by_side

    count = config.num_samples
    if count == 1:
        write_piece(prompt)
        for piece in pieces:
            write_piece(piece.text)
        write_piece("\n")
    elif fits_side_by_side(count):
        with SideBySide(prompt, count, caption=f"seed {config.seed}") as columns:
            for piece in pieces:
                columns.add(*piece)
    else:
        texts = [""] * count
        for piece in pieces:
            texts[piece.index] += piece.text
            if piece.finished:
                console.rule(f"sample {piece.index + 1} of {count}", style="dim")
                write_piece(prompt + texts[piece.index] + "\n")


def _write_samples(texts: list[str], checkpoint: Path, prompt: str, config: SampleConfig, as_json: bool,
                   output: Path | None) -> None:
    """--json: one object with the samples (continuations only), the settings and the seed.
    --output: the same text or JSON in a file, written atomically, and a note on stderr."""
    from textgen.render.console import print_note

    if as_json:
        import json  # here, not at the top: `textgen --help` loads every command module

        settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"}
        result = json.dumps({"checkpoint": str(checkpoint), "prompt": prompt, "seed": config.seed,
                             "settings": settings, "samples": texts}, ensure_ascii=False) + "\n"
    else:
        result = "".join(_sample_header(i, len(texts)) + prompt + text + "\n" for i, text in enumerate(texts))
    if output is None:
        sys.stdout.write(result)
        sys.stdout.flush()
    else:
        from textgen.checkpoint.atomic import write_text

        try:
            write_text(output, result)
        except OSError as error:
            raise TextgenError(f"could not write {output}: {error.strerror or error}") from None
        print_note(f"wrote {len(texts)} sample{'s' if len(texts) > 1 else ''} to {output}")


def _sample_header(index: int, count: int) -> str:
    return f"--- sample {index + 1} of {count} ---\n" if count > 1 else ""
