"""`textgen train`: a new run from a text file, or `--resume` of a saved one."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen.config import (
    CELLS, DEFAULT_CHECKPOINT_DIR, DEFAULT_CORPUS, PRESETS, SUBWORD_MODELS, TOKENIZER_KINDS, ModelConfig,
    TokenizerConfig, TrainConfig, settings_for,
)
from textgen.errors import TextgenError

_model, _tok, _train = ModelConfig(), TokenizerConfig(), TrainConfig()
CORPUS, TOKENIZER, MODEL, TRAINING, LIMITS, OUTPUT = (
    "Corpus", "Tokenizer", "Model", "Training", "When to stop", "Output",
)
# Options a resumed run may take: its limits, where to run, and the text when it has moved.
_RESUMABLE = {"resume", "corpus", "max_steps", "epochs", "max_time", "device", "encoding"}
# Options that are not settings of the run itself.
_NOT_SETTINGS = {"corpus", "out", "overwrite", "resume", "preset", "encoding"}


def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A UTF-8 text file, a folder of them, a glob, or a corpus name (python-docs, shakespeare). "
             "Default: python-docs, built in.",
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
    subword_sample: Annotated[int, typer.Option(
        help="subword: learn the vocabulary from at most this many lines, drawn evenly (0 = all).",
        rich_help_panel=TOKENIZER)] = _tok.subword_sample,
    cell: Annotated[str, typer.Option(help=" | ".join(CELLS), rich_help_panel=MODEL)] = _model.cell,
    layers: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.layers,
    hidden_size: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.hidden_size,
    embedding_size: Annotated[int, typer.Option(rich_help_panel=MODEL)] = _model.embedding_size,
    dropout: Annotated[float, typer.Option(rich_help_panel=MODEL)] = _model.dropout,
    weight_drop: Annotated[float, typer.Option(
        help="DropConnect on the hidden-to-hidden weights while training (AWD-LSTM's).",
        rich_help_panel=MODEL)] = _model.weight_drop,
    embedding_dropout: Annotated[float, typer.Option(
        help="Share of the token types dropped from the embedding per batch while training.",
        rich_help_panel=MODEL)] = _model.embedding_dropout,
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
    activation_penalty: Annotated[float, typer.Option(
        help="AR: add this times the mean square of the top layer's output to the loss (AWD-LSTM used 2; 0 = off).",
        rich_help_panel=TRAINING)] = _train.activation_penalty,
    activation_change_penalty: Annotated[float, typer.Option(
        help="TAR: add this times the mean square of its change from step to step (AWD-LSTM used 1; 0 = off).",
        rich_help_panel=TRAINING)] = _train.activation_change_penalty,
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
    given = {name: value for name, value in ctx.params.items() if _given(ctx, name)}
    if resume is not None:
        _resume_training(resume, corpus, given)
        return
    request = {("kind" if name == "tokenizer" else name): value for name, value in given.items()
               if name not in _NOT_SETTINGS}
    settings = settings_for(request, preset)
    from textgen.checkpoint import check_output_directory, recover_interrupted_save
    from textgen.checkpoint.lock import run_lock

    if out is None:
        out = _default_out(corpus)
    check_output_directory(out, overwrite)

    from textgen.data.prepare import load_or_prepare
    from textgen.devices import keep_freed_memory, resolve_device, training_dtype
    from textgen.render.console import console
    from textgen.training import train as run_training
    from textgen.training.calibration import calibrated_settings
    from textgen.training.distributed import join, leave

    keep_freed_memory()  # before calibration, which measures the speed training will have
    training_dtype(settings.train.precision, resolve_device(settings.train.device))  # fails before any work
    group = join(settings.train.device)  # several processes under torchrun; otherwise just this one
    try:
        settings, calibration = calibrated_settings(request, preset, group)
        with run_lock(out) if group.is_main else nullcontext():
            if group.is_main:
                recover_interrupted_save(out)
                check_output_directory(out, overwrite)  # again: a run that just ended may have saved there
            # Under torchrun, documents are shared out by rows of the id cache, so even a small file goes there.
            stream = group.active and settings.tokenizer.documents != "none"
            text = _read_corpus(group, lambda progress: load_or_prepare(
                corpus, encoding, settings.tokenizer, settings.train.val_fraction, progress, stream))
            if settings.preset is not None and group.is_main:
                why = f"{calibration.describe()}; --preset to choose" if calibration else "as asked"
                console.print(f"[bold]preset {settings.preset}[/] ({why}): {PRESETS[settings.preset].description}",
                              soft_wrap=True)
            with _display(group) as display:
                result = run_training(text, out, settings.model, settings.tokenizer, settings.train, display, group)
    finally:
        leave(group, failed=sys.exc_info()[0] is not None)
    _finish(result, "ROMEO:" if getattr(text, "name", None) == "shakespeare" else "", group)


def _read_corpus(group: Any, read: Any) -> Any:
    """The corpus, read with a progress bar by process 0 first (it prepares the id cache of a big
    one), then by the others, who find the cache ready."""
    from textgen.render.training import PreparationDisplay

    if group.is_main:
        with PreparationDisplay() as show_progress:
            text = read(show_progress)
    group.barrier()
    return text if group.is_main else read(None)


def _display(group: Any) -> Any:
    from textgen.render.training import TrainingDisplay

    return TrainingDisplay() if group.is_main else nullcontext(None)


def _default_out(corpus_source: str | None) -> Path:
    """checkpoints/<corpus name>, or -2, -3, ... so an earlier run is never overwritten."""
    stem = Path(corpus_source).stem if corpus_source else DEFAULT_CORPUS
    candidate = DEFAULT_CHECKPOINT_DIR / stem
    number = 2
    while candidate.exists():
        candidate = DEFAULT_CHECKPOINT_DIR / f"{stem}-{number}"
        number += 1
    return candidate


def _resume_training(checkpoint: Path, corpus: str | None, given: dict[str, Any]) -> None:
    fixed = sorted(set(given) - _RESUMABLE)
    if fixed:
        names = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise TextgenError(f"{names} cannot change when resuming: a resumed run keeps its own settings "
                           "(only --max-time, --max-steps, --epochs and --device may be given)")
    limits = {name: given[name] for name in ("max_steps", "epochs", "max_time", "device") if name in given}
    TrainConfig(**limits)  # a bad limit fails before anything is read
    from textgen.checkpoint import read_info, recover_interrupted_save
    from textgen.data.corpus import recorded_corpus
    from textgen.data.prepare import load_or_prepare
    from textgen.devices import keep_freed_memory, resolve_device, training_dtype
    from textgen.checkpoint.lock import run_lock
    from textgen.training import resume as resume_run
    from textgen.training.distributed import join, leave

    keep_freed_memory()

    info = read_info(checkpoint) if checkpoint.is_dir() else None
    device = limits.get("device", info.training.config.device if info else "auto")
    group = join(device)
    try:
        with run_lock(checkpoint) if group.is_main else nullcontext():
            if group.is_main:
                recover_interrupted_save(checkpoint)
            group.barrier()
            info = read_info(checkpoint)
            training_dtype(info.training.config.precision, resolve_device(device))
            if corpus:
                stream = info.corpus.streamed or (group.active and info.tokenizer.documents != "none")
                text = _read_corpus(group, lambda progress: load_or_prepare(
                    corpus, info.corpus.encoding or "utf-8", info.tokenizer, info.corpus.val_fraction, progress,
                    stream))
            elif info.corpus.streamed:
                text = None  # found again and read from the id cache by resume itself
            else:
                text = recorded_corpus(info.corpus, "give the training text: textgen train FILE --resume CHECKPOINT")
            with _display(group) as display:
                result = resume_run(checkpoint, text, limits, display, group)
    finally:
        leave(group, failed=sys.exc_info()[0] is not None)
    _finish(result, "ROMEO:" if info.corpus.name == "shakespeare" else "", group)


def _finish(result: Any, prompt: str, group: Any) -> None:
    """The run's report, then what to do next (process 0 only); exit 130 after an interruption."""
    from textgen.render.console import console
    from textgen.render.tables import run_report, training_summary

    if not group.is_main:
        if result.interrupted:
            raise typer.Exit(130)
        return

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
