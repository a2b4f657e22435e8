"""`textgen train`: a new run from a text file, or `--resume` of a saved one."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from textgen.config import (
    CELLS, DEFAULT_CHECKPOINT_DIR, DEFAULT_CORPUS, OPTIMIZERS, PRESETS, SUBWORD_MODELS, TOKENIZER_KINDS, ModelConfig,
    TokenizerConfig, TrainConfig,
)

_model, _tok, _train = ModelConfig(), TokenizerConfig(), TrainConfig()
CORPUS, TOKENIZER, MODEL, TRAINING, LIMITS, OUTPUT = (
    "Corpus", "Tokenizer", "Model", "Training", "When to stop", "Output",
)


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
    init_from: Annotated[Optional[Path], typer.Option(
        help="Fine-tune: start from this checkpoint's best weights and shape, its vocabulary grown for the "
             "new text, with a lower learning rate; it is never written to.",
        rich_help_panel=MODEL, show_default=False)] = None,
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
    cell: Annotated[str, typer.Option(
        help=f"{' | '.join(CELLS)}: mingru and minlstm gate on the input alone, so a window's matrix "
             "products are one per layer.", rich_help_panel=MODEL)] = _model.cell,
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
    ngram_order: Annotated[int, typer.Option(
        help="Mix in Kneser-Ney counts of the training text, contexts up to this many tokens less one "
             "(0 = none).", rich_help_panel=MODEL)] = _model.ngram_order,
    seq_len: Annotated[int, typer.Option(help="Tokens per BPTT window.", rich_help_panel=TRAINING)] = _train.seq_len,
    batch_size: Annotated[int, typer.Option(help="Parallel streams.", rich_help_panel=TRAINING)] = _train.batch_size,
    learning_rate: Annotated[float, typer.Option(rich_help_panel=TRAINING)] = _train.learning_rate,
    clip: Annotated[float, typer.Option(help="Gradient-norm clipping (0 = off).", rich_help_panel=TRAINING)] = _train.clip,
    weight_decay: Annotated[float, typer.Option(rich_help_panel=TRAINING)] = _train.weight_decay,
    optimizer: Annotated[str, typer.Option(
        help=f"{' | '.join(OPTIMIZERS)}: muon orthogonalises the recurrent weight matrices' steps (AdamW for the rest).",
        rich_help_panel=TRAINING)] = _train.optimizer,
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
        if init_from is not None:
            from textgen.errors import TextgenError

            raise TextgenError("--init-from starts a new run and --resume continues one: give one of them")
        _resume_training(resume, corpus, given)
        return
    from textgen.cli.app import field_for
    from textgen.config import run_setting_names

    # The options that set a run's fields (the rest, --out, --preset, ..., are the command's own).
    request = {field_for(name): value for name, value in given.items() if field_for(name) in run_setting_names()}
    from textgen import api

    with _joined(request.get("device", _train.device)) as group, _Watcher() as watcher:
        result = api.train(corpus, out or _default_out(corpus), preset, encoding, watcher, overwrite=overwrite,
                           progress=watcher.preparation, on_settings=watcher.announce, group=group,
                           init_from=init_from, **request)
    _finish(result, group)


@contextmanager
def _joined(device: str) -> Iterator[Any]:
    """This process's group: several processes under torchrun, otherwise just this one. Like the
    allocator setting, it is the process's own, so the command line sets it up, not the library."""
    from textgen.devices import keep_freed_memory
    from textgen.training.distributed import join, leave

    keep_freed_memory()  # before calibration, which measures the speed training will have
    group = join(device)
    try:
        yield group
    except BaseException:
        leave(group, failed=True)
        raise
    leave(group)


class _Watcher:
    """What the command line shows of a run on process 0: a progress bar while a big corpus is
    prepared, the preset line, then the training display (the library calls the hooks)."""

    def __init__(self) -> None:
        from textgen.render.training import PreparationDisplay, TrainingDisplay

        self.preparation, self.display = PreparationDisplay(), TrainingDisplay()

    def __enter__(self) -> "_Watcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.preparation.__exit__(*exc)
        self.display.__exit__(*exc)

    def announce(self, settings: Any, calibration: Any) -> None:
        from textgen.render.console import console

        self.preparation.__exit__()  # its bar is gone before anything else is printed
        if settings.preset is not None:
            why = f"{calibration.describe()}; --preset to choose" if calibration else "as asked"
            description = PRESETS[settings.preset].describe(settings.model.cell)
            console.print(f"[bold]preset {settings.preset}[/] ({why}): {description}", soft_wrap=True)

    def on_start(self, plan: Any) -> None:
        self.preparation.__exit__()
        self.display.on_start(plan)

    def __getattr__(self, hook: str) -> Any:
        return getattr(self.display, hook)  # on_step, on_evaluation, on_checkpoint, on_stop_requested


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
    from textgen import api
    from textgen.cli.app import field_for

    # Everything but the command's own arguments is a setting, which the library checks may change.
    limits = {field_for(name): value for name, value in given.items() if name not in ("resume", "corpus", "encoding")}
    api.check_resumable(limits)  # before the checkpoint is read for its device
    with _joined(limits.get("device") or _recorded_device(checkpoint)) as group, _Watcher() as watcher:
        result = api.resume(checkpoint, corpus, watcher, progress=watcher.preparation, group=group, **limits)
    _finish(result, group)


def _recorded_device(checkpoint: Path) -> str:
    """The device a run was trained on, which picks how its processes talk under torchrun."""
    from textgen.checkpoint import read_info

    return read_info(checkpoint).training.config.device if checkpoint.is_dir() else "auto"


def _finish(result: Any, group: Any) -> None:
    """The run's report, then what to do next (process 0 only); exit 130 after an interruption."""
    import json
    import shlex

    from textgen.render.console import console
    from textgen.render.tables import run_report, training_summary

    prompt = "ROMEO:" if result.info.corpus.name == "shakespeare" else ""

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
