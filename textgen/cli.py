"""The `textgen` command line: train, sample, evaluate and info, each a thin shell over one library call.

Torch is imported inside the commands so that `textgen --help` answers at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen import __version__
from textgen.config import (
    CELLS, DEFAULT_CHECKPOINT_DIR, DEFAULT_CORPUS, PRESETS, SHAPE_OPTIONS, SUBWORD_MODELS, TOKENIZER_KINDS,
    UNKNOWN_POLICIES, apply_preset, preset_for_budget,
    ModelConfig, SampleConfig, TokenizerConfig, TrainConfig,
    check_model_config, check_sample_config, check_tokenizer_config, check_train_config, unescape,
)
from textgen.errors import TextgenError

# Typer raises click's exceptions (from its own bundled copy in recent releases); find them
# through a public name so either layout works.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="textgen",
    help="Train a recurrent language model on your text, generate from it, and measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

_model, _tok, _train = ModelConfig(), TokenizerConfig(), TrainConfig()
_sample = SampleConfig()
CORPUS, TOKENIZER, MODEL, TRAINING, LIMITS, OUTPUT = (
    "Corpus", "Tokenizer", "Model", "Training", "When to stop", "Output",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"textgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train a recurrent language model on your text, generate from it, and measure it."""


def _default_out(corpus_source: str | None) -> Path:
    """checkpoints/<corpus name>, or -2, -3, ... so an earlier run is never overwritten."""
    stem = Path(corpus_source).stem if corpus_source else DEFAULT_CORPUS
    candidate = DEFAULT_CHECKPOINT_DIR / stem
    number = 2
    while candidate.exists():
        candidate = DEFAULT_CHECKPOINT_DIR / f"{stem}-{number}"
        number += 1
    return candidate


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A UTF-8 text file, or a corpus name (python-docs, shakespeare). Default: python-docs, built in.",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Checkpoint directory. Default: checkpoints/<corpus name>.",
                                                rich_help_panel=OUTPUT, show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(help="Allow --out to replace an existing checkpoint.",
                                            rich_help_panel=OUTPUT)] = False,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run saved in this checkpoint where it stopped (a new limit may extend it).",
        rich_help_panel=OUTPUT, show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option(
        help=f"{' | '.join(PRESETS)}: a measured model and batch shape. Default: chosen from --max-time "
             "unless you set a shape yourself.", rich_help_panel=MODEL, show_default=False)] = None,
    encoding: Annotated[str, typer.Option(help="Encoding of the text file.", rich_help_panel=CORPUS)] = "utf-8",
    val_fraction: Annotated[float, typer.Option(help="Share of the text, at its end, held out for validation.",
                                                rich_help_panel=CORPUS)] = _train.val_fraction,
    documents: Annotated[str, typer.Option(
        help="none | lines | blank-lines: the file is many short texts (one per line, or per paragraph), "
             "each learnt and generated whole, from its own start to its end.",
        rich_help_panel=CORPUS)] = _tok.documents,
    tokenizer: Annotated[str, typer.Option(help=f"{' | '.join(TOKENIZER_KINDS)}", rich_help_panel=TOKENIZER)] = _tok.kind,
    max_vocab: Annotated[int, typer.Option(help="word: keep at most this many tokens.", rich_help_panel=TOKENIZER)] = _tok.max_vocab,
    min_count: Annotated[int, typer.Option(help="word: drop tokens seen fewer times.", rich_help_panel=TOKENIZER)] = _tok.min_count,
    vocab_size: Annotated[int, typer.Option(help="subword: vocabulary size.", rich_help_panel=TOKENIZER)] = _tok.vocab_size,
    subword_model: Annotated[str, typer.Option(help=" | ".join(SUBWORD_MODELS), rich_help_panel=TOKENIZER)] = _tok.subword_model,
    cell: Annotated[str, typer.Option(help=" | ".join(CELLS), rich_help_panel=MODEL)] = _model.cell,
    layers: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.layers,
    hidden_size: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.hidden_size,
    embedding_size: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.embedding_size,
    dropout: Annotated[float, typer.Option(rich_help_panel=MODEL)] = _model.dropout,
    tie_weights: Annotated[bool, typer.Option(help="Share input and output embeddings (sizes must match).",
                                              rich_help_panel=MODEL)] = _model.tie_weights,
    skip_connections: Annotated[Optional[bool], typer.Option(
        help="Feed the embedding to every layer and every layer to the output (default: on; off with --tie-weights).",
        rich_help_panel=MODEL, show_default=False)] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per BPTT window.", rich_help_panel=TRAINING)] = _train.seq_len,
    batch_size: Annotated[int, typer.Option(help="Parallel streams.", rich_help_panel=TRAINING)] = _train.batch_size,
    learning_rate: Annotated[float, typer.Option(rich_help_panel=TRAINING)] = _train.learning_rate,
    clip: Annotated[float, typer.Option(help="Gradient-norm clipping (0 = off).", rich_help_panel=TRAINING)] = _train.clip,
    weight_decay: Annotated[float, typer.Option(rich_help_panel=TRAINING)] = _train.weight_decay,
    ema_decay: Annotated[float, typer.Option(help="Keep and save a moving average of the weights (0 = off).",
                                             rich_help_panel=TRAINING)] = _train.ema_decay,
    precision: Annotated[str, typer.Option(help="auto (bfloat16 where the hardware has it) | float32 | bfloat16",
                                           rich_help_panel=TRAINING)] = _train.precision,
    eval_every: Annotated[int, typer.Option(help="Steps between validations (0 = five per run).",
                                            rich_help_panel=TRAINING)] = _train.eval_every,
    seed: Annotated[int, typer.Option(help="Makes a run repeatable on the same machine.", rich_help_panel=TRAINING)] = _train.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps", rich_help_panel=TRAINING)] = _train.device,
    max_steps: Annotated[Optional[int], typer.Option(rich_help_panel=LIMITS, show_default=False)] = None,
    epochs: Annotated[Optional[float], typer.Option(rich_help_panel=LIMITS, show_default=False)] = None,
    max_time: Annotated[Optional[float], typer.Option(help="Seconds of training, validations included (the final one comes after).",
                                                      rich_help_panel=LIMITS, show_default=False)] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many validations without a new best (0 = never).",
                                          rich_help_panel=LIMITS)] = _train.patience,
) -> None:
    """Train a model on a text file and save its best-by-validation checkpoint."""
    given = {name for name in ctx.params if _given(ctx, name)}
    limits = {"max_steps": max_steps, "epochs": epochs, "max_time": max_time}
    if resume is not None:
        _resume_training(resume, corpus, {k: v for k, v in limits.items() if k in given}, device, given)
        return
    tokenizer_config = TokenizerConfig(kind=tokenizer, max_vocab=max_vocab, min_count=min_count,
                                       vocab_size=vocab_size, subword_model=subword_model, documents=documents)
    if skip_connections is None:  # tied weights need an output layer that reads the top layer alone
        skip_connections = _model.skip_connections and not tie_weights
    model_config = ModelConfig(cell=cell, layers=layers, hidden_size=hidden_size, embedding_size=embedding_size,
                               dropout=dropout, tie_weights=tie_weights, skip_connections=skip_connections)
    train_config = TrainConfig(
        seq_len=seq_len, batch_size=batch_size, learning_rate=learning_rate, clip=clip, weight_decay=weight_decay,
        val_fraction=val_fraction, eval_every=eval_every, seed=seed, device=device, precision=precision,
        ema_decay=ema_decay, patience=patience, **limits,
    )
    check_train_config(train_config)
    chosen = preset
    if chosen is None and not given & SHAPE_OPTIONS and max_steps is None and epochs is None:
        chosen = preset_for_budget(max_time or train_config.default_max_time)
    if chosen is not None:
        model_config, train_config = apply_preset(chosen, model_config, train_config, keep=given)
    check_tokenizer_config(tokenizer_config)
    check_model_config(model_config)
    check_train_config(train_config)
    from textgen.checkpoint import check_output_directory, recover_interrupted_save
    from textgen.locking import run_lock

    if out is None:
        out = _default_out(corpus)
    check_output_directory(out, overwrite)

    from textgen.console import TrainingDisplay, console
    from textgen.corpus import load_corpus
    from textgen.devices import resolve_device, training_dtype
    from textgen.training import train as run_training

    training_dtype(train_config.precision, resolve_device(device))  # a wrong --device or --precision fails first
    with run_lock(out):
        recover_interrupted_save(out)
        check_output_directory(out, overwrite)  # again: a run that just ended may have saved there
        text = load_corpus(corpus, encoding=encoding)
        if chosen is not None:
            why = "as asked" if preset else f"for a {max_time or train_config.default_max_time:g} s budget; --preset to choose"
            console.print(f"[bold]preset {chosen}[/] ({why}): {PRESETS[chosen].description}", soft_wrap=True)
        with TrainingDisplay() as display:
            result = run_training(text, out, model_config, tokenizer_config, train_config, callbacks=display)
    _finish(result, "ROMEO:" if text.name == "shakespeare" else "")


# Options a resumed run may take: its limits, where to run, and the text when it has moved.
_RESUMABLE = {"resume", "corpus", "max_steps", "epochs", "max_time", "device", "encoding"}


def _resume_training(checkpoint: Path, corpus: str | None, limits: dict, device: str, given: set[str]) -> None:
    fixed = sorted(given - _RESUMABLE)
    if fixed:
        names = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise TextgenError(f"{names} cannot change when resuming: a resumed run keeps its own settings "
                           "(only --max-time, --max-steps, --epochs and --device may be given)")
    check_train_config(TrainConfig(**limits))
    from textgen.checkpoint import read_info, recover_interrupted_save
    from textgen.console import TrainingDisplay
    from textgen.corpus import load_corpus, recorded_corpus
    from textgen.devices import resolve_device, training_dtype
    from textgen.locking import run_lock
    from textgen.training import resume as resume_run

    with run_lock(checkpoint):
        recover_interrupted_save(checkpoint)
        info = read_info(checkpoint)
        training_dtype(info.training.get("precision", "auto"), resolve_device(device))
        if "device" in given:
            limits["device"] = device
        if corpus:
            text = load_corpus(corpus, encoding=info.corpus.get("encoding") or "utf-8")
        else:
            text = recorded_corpus(info.corpus, "give the training text: textgen train FILE --resume CHECKPOINT")
        with TrainingDisplay() as display:
            result = resume_run(checkpoint, text, limits, callbacks=display)
    _finish(result, "ROMEO:" if info.corpus.get("name") == "shakespeare" else "")


def _finish(result, prompt: str) -> None:
    """The run's report, then what to do next; exit 130 after an interruption."""
    from textgen.console import console, run_report, training_summary

    console.print(training_summary(result))
    if result.metrics:
        console.print(run_report(result.checkpoint, result.info, result.parameters, result.metrics))
    where = shlex.quote(str(result.checkpoint))
    if result.interrupted:
        console.print(f"\nsaved where the run stands in {where}; continue it with:  "
                      f"[bold]textgen train --resume {where}[/]", soft_wrap=True)
        raise typer.Exit(130)
    prompt_part = f" --prompt {json.dumps(prompt)}" if prompt else ""
    console.print(f"\nnext, try:  [bold]textgen sample {where}{prompt_part} --length 500[/]", soft_wrap=True)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option, rather than leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


SAMPLING, STOPPING, SAMPLE_OUTPUT = "Sampling", "Length and stops", "Output"


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory made by `textgen train`.", show_default=False)],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Seed phrase the text continues.")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate per sample, whatever the tokenizer.",
                                        rich_help_panel=STOPPING)] = _sample.length,
    stop: Annotated[Optional[list[str]], typer.Option(
        "--stop", help="End a sample where this text first appears, leaving it out (repeatable; \\n is a line break).",
        rich_help_panel=STOPPING, show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Above 0; lower is safer, higher wilder.",
                                               rich_help_panel=SAMPLING)] = _sample.temperature,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Draw from the k likeliest tokens (0 = all).",
                                       rich_help_panel=SAMPLING)] = _sample.top_k,
    top_p: Annotated[float, typer.Option("--top-p", help="Then from the likeliest tokens that together reach this probability (1 = all).",
                                         rich_help_panel=SAMPLING)] = _sample.top_p,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always the likeliest token (temperature, top-k and top-p unused).",
                                         rich_help_panel=SAMPLING)] = _sample.greedy,
    repetition_penalty: Annotated[float, typer.Option(
        "--repetition-penalty", help="Above 1 makes tokens already in the text less likely (1 = off); for word and "
        "subword models that loop.", rich_help_panel=SAMPLING)] = _sample.repetition_penalty,
    seed: Annotated[Optional[int], typer.Option(help="Makes sampling repeatable.", rich_help_panel=SAMPLING,
                                                show_default=False)] = None,
    unknown: Annotated[str, typer.Option(help="Seed-text symbols the model never saw (char, word): "
                                              f"{' | '.join(UNKNOWN_POLICIES)}.", rich_help_panel=SAMPLING)] = _sample.unknown,
    num_samples: Annotated[int, typer.Option(help="Samples, made together as one batch.",
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
    config = SampleConfig(
        length=length, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
        repetition_penalty=repetition_penalty, stop=tuple(unescape(text) for text in stop or ()),
        num_samples=num_samples, seed=seed, unknown=unknown,
    )
    check_sample_config(config)
    if interactive and (as_json or output is not None or num_samples > 1):
        raise TextgenError("--interactive writes one sample at a time to the terminal; leave out "
                           "--json, --output and --num-samples")
    if output is not None:
        _check_output_file(output)
    from textgen.api import load
    from textgen.sampling import resolve_seed

    model = load(checkpoint, device)
    model.check_prompt(prompt, config.unknown)  # unseen symbols fail before anything is printed
    if interactive:
        from textgen.interactive import run_interactive

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


def _show_documents(pieces: Iterator[Any], prompt: str, config: SampleConfig, documents: str) -> None:
    """Whole documents in order, one per line (or paragraph), each as soon as those before it are done."""
    from textgen.console import write_piece

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
    from textgen.console import SideBySide, console, fits_side_by_side, write_piece

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
    from textgen.console import print_note

    if as_json:
        settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"}
        result = json.dumps({"checkpoint": str(checkpoint), "prompt": prompt, "seed": config.seed,
                             "settings": settings, "samples": texts}, ensure_ascii=False) + "\n"
    else:
        result = "".join(_sample_header(i, len(texts)) + prompt + text + "\n" for i, text in enumerate(texts))
    if output is None:
        sys.stdout.write(result)
        sys.stdout.flush()
    else:
        _write_file_atomically(output, result)
        print_note(f"wrote {len(texts)} sample{'s' if len(texts) > 1 else ''} to {output}")


def _sample_header(index: int, count: int) -> str:
    return f"--- sample {index + 1} of {count} ---\n" if count > 1 else ""


def _check_output_file(path: Path) -> None:
    """Refuse, before any work, an --output that cannot be written or is not a plain file."""
    if path.is_dir():
        raise TextgenError(f"--output {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise TextgenError(f"--output {path} is not a regular file")
    folder = path.parent
    if not folder.is_dir():
        raise TextgenError(f"--output {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TextgenError(f"--output {path}: the folder {folder} is not writable")


def _write_file_atomically(path: Path, text: str) -> None:
    """Write beside `path`, then rename over it: a failure leaves any earlier file as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise TextgenError(f"could not write {path}: {error.strerror or error}") from None


@app.command()
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
    from textgen.checkpoint import load_checkpoint
    from textgen.console import console, evaluation_table
    from textgen.corpus import held_out_text, read_text_file
    from textgen.devices import resolve_device
    from textgen.evaluation import evaluate_text

    loaded = load_checkpoint(checkpoint, resolve_device(device))
    if file is None:
        context, text, what = held_out_text(loaded.info.corpus)
    else:
        context, text, what = "", read_text_file(Path(file), encoding), file
    result = evaluate_text(loaded.model, loaded.tokenizer, text, context, unknown, label=what)
    if result.tokens == 0:
        raise TextgenError(f"{what} is too short to score: it is a single token")
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "text": what, **result.to_json()}))
    else:
        console.print(evaluation_table(result, what))


@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory made by `textgen train`.", show_default=False)],
) -> None:
    """Show what a checkpoint holds: model, tokenizer, corpus and best figures."""
    from textgen.checkpoint import load_checkpoint, read_metrics
    from textgen.console import console, run_report

    loaded = load_checkpoint(checkpoint)
    console.print(run_report(checkpoint, loaded.info, loaded.model.num_parameters(), read_metrics(checkpoint)))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with every anticipated failure as one line on stderr and a non-zero exit."""
    from textgen.console import print_error

    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]  # a bare `textgen` shows what it can do, and that is not an error
    try:
        code = app(args=argv, prog_name="textgen", standalone_mode=False)
    except TextgenError as error:
        print_error(str(error))
        sys.exit(error.exit_code)
    except _UsageError as error:
        command = f" {error.ctx.command_path.split(' ', 1)[1]}" if error.ctx and " " in error.ctx.command_path else ""
        print_error(f"{error.format_message()} (see textgen{command} --help)")
        sys.exit(2)
    except _ClickException as error:
        print_error(error.format_message())
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted")
        sys.exit(130)
    if code == 130:  # Typer turns Ctrl-C inside a command into exit code 130
        print_error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
