"""The Python API: load a checkpoint once, then generate, stream and score text, strings in and out.

    from textgen import load

    model = load("checkpoints/shakespeare")
    print(model.generate("ROMEO:", length=300, temperature=0.8, top_k=40, seed=7))
    for piece in model.stream("JULIET:", length=200):
        print(piece, end="", flush=True)
    model.perplexity("To be, or not to be, that is the question.")

Every setting left out (or None) takes its default from SampleConfig. The CLI's `sample` command
is a shell over this class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textgen.checkpoint import CONFIG_FILE, CheckpointInfo, check_vocabulary, load_weights, read_info, read_whole
from textgen.config import SampleConfig, sample_settings
from textgen.devices import resolve_device
from textgen.errors import TextgenError
from textgen.reports import NextToken
from textgen.evaluation import EvaluationResult, evaluate_text
from textgen.model import RNNLanguageModel, Step, make_step, prime
from textgen.sampling import SamplePiece, candidates, penalize_repeats, prompt_ids, sample_pieces
from textgen.tokenizers import Tokenizer, load_tokenizer
from textgen.training import TrainingCallbacks, TrainingResult

if TYPE_CHECKING:
    from textgen.config import RunSettings
    from textgen.training.calibration import Calibration
    from textgen.training.distributed import Group
    from textgen.training.fine_tuning import Base


class TextModel:
    """A trained model and its tokenizer, ready to write and score text."""

    def __init__(self, model: Any, tokenizer: Any, info: CheckpointInfo | None = None, path: Path | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.path = path
        self._step: Step | None = None

    @property
    def documents(self) -> str:
        """"lines" or "blank-lines" for a model of separate documents (each sample is one whole
        document), "none" for a model of continuous text."""
        return getattr(self.tokenizer, "mode", "none")

    @property
    def step(self) -> Step:
        """The one-token step, built on first use and kept (the weights do not change)."""
        if self._step is None:
            self._step = make_step(self.model)
        return self._step

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- settings ----------------------------------------------------------------------------

    def settings(self, *, base: SampleConfig | None = None, **changes: Any) -> SampleConfig:
        """A checked SampleConfig: `base` (or the defaults) with the given settings changed. Every
        SampleConfig field is a keyword (length, temperature, top_k, ...); one left out or None
        keeps its value, and `stop` may be one text or several."""
        names = {setting.name for setting in sample_settings()}
        unknown = sorted(set(changes) - names)
        if unknown:  # what Python says of any unknown keyword, with the ones there are
            raise TypeError(f"{unknown[0]!r} is not a sampling setting; the settings are {', '.join(sorted(names))}")
        given = {name: value for name, value in changes.items() if value is not None}
        return dataclasses.replace(base or SampleConfig(), **given)

    # --- writing -----------------------------------------------------------------------------

    def generate(self, prompt: str = "", **settings: Any) -> str:
        """The continuation of `prompt` (without the prompt itself), `length` characters at most.

        Settings: any SampleConfig field but num_samples, as a keyword (see `settings`).
        """
        return "".join(self.stream(prompt, **settings))

    def stream(self, prompt: str = "", **settings: Any) -> Iterator[str]:
        """The continuation of `prompt`, yielded piece by piece as it is made (same settings as generate)."""
        config = self.settings(**{**settings, "num_samples": 1})
        for piece in self.stream_samples(prompt, config):
            if piece.text:
                yield piece.text

    def generate_many(self, prompt: str = "", num_samples: int = 2, **settings: Any) -> list[str]:
        """`num_samples` continuations made together as one batch (far cheaper than one by one).
        With a seed, the first is the one generate() gives for the same seed."""
        texts = [""] * num_samples
        for piece in self.stream_samples(prompt, self.settings(num_samples=num_samples, **settings)):
            texts[piece.index] += piece.text
        return texts

    def stream_samples(self, prompt: str, config: SampleConfig) -> Iterator[SamplePiece]:
        """Pieces of all `config.num_samples` samples as they are made, tagged with their sample."""
        return sample_pieces(self.model, self.tokenizer, prompt, config, self.step)

    def check_prompt(self, prompt: str, unknown: str = "error") -> None:
        """Raise TextgenError, naming them, if `prompt` has symbols the model never saw (and `unknown`
        is "error"); lets a caller fail before it prints anything."""
        prompt_ids(self.tokenizer, prompt, unknown)

    @torch.no_grad()
    def next_tokens(self, prompt: str = "", top: int = 10, config: SampleConfig | None = None) -> list[NextToken]:
        """The `top` likeliest next tokens after `prompt` with their probabilities under `config`'s
        temperature, top-k, top-p and repetition penalty (<unk> excluded, as the sampler does)."""
        config = config or SampleConfig()
        ids = prompt_ids(self.tokenizer, prompt, config.unknown)
        logits, _ = prime(self.model, ids)
        logits = logits.float().cpu()  # a small table: the CPU does it anywhere (MPS has no float64)
        if config.repetition_penalty != 1.0:
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[:, torch.tensor(ids, device=logits.device)] = True
            logits = penalize_repeats(logits, seen, config.repetition_penalty)
        if self.tokenizer.unk_id is not None:
            logits[:, self.tokenizer.unk_id] = float("-inf")
        probabilities, token_ids = candidates(logits, config.temperature, config.top_k, config.top_p)
        if token_ids is None:
            token_ids = torch.arange(logits.shape[-1], device=logits.device).view(1, -1)
        best = torch.topk(probabilities[0], min(top, probabilities.shape[-1]))
        return [
            NextToken(int(token_ids[0, i]), self.tokenizer.token_text(int(token_ids[0, i])), float(p))
            for p, i in zip(best.values.tolist(), best.indices.tolist())
            if p > 0
        ]

    # --- scoring -----------------------------------------------------------------------------

    def evaluate(self, text: str, context: str = "", unknown: str = "error") -> EvaluationResult:
        """Loss, perplexity and bits per character of `text` (primed by `context`, if any).
        `unknown`: symbols the model never saw are an error, or are skipped or replaced; the
        result's `unseen` and `unseen_handling` say how many and what was done."""
        return evaluate_text(self.model, self.tokenizer, text, context, unknown)

    def perplexity(self, text: str, unknown: str = "error") -> float:
        """exp(mean loss per token) over `text`: lower means the model finds it likelier."""
        result = self.evaluate(text, unknown=unknown)
        if result.tokens == 0:
            raise TextgenError("the text is too short to score: it is a single token")
        return result.perplexity


def train(
    corpus: str | Path | None = None,
    out: str | Path = "checkpoints/model",
    preset: str | None = None,
    encoding: str = "utf-8",
    callbacks: TrainingCallbacks | None = None,
    *,
    overwrite: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    on_settings: Callable[[RunSettings, Calibration | None], None] | None = None,
    group: Group | None = None,
    init_from: str | Path | None = None,
    **settings: Any,
) -> TrainingResult:
    """Train as `textgen train` does, from the same request (the command line calls this):
    `corpus` is a text file, a folder, a glob or a corpus name (None: the built-in python-docs),
    `settings` are the options by their field names (max_time=80, hidden_size=256, kind="word",
    ...). The same presets and policies apply (textgen.config.settings_for, with the machine's
    speed measured when the budget chooses the preset).

    `overwrite=False` refuses an `out` that already holds a checkpoint. Process 0 alone calls
    the watchers: `progress(phase, bytes done, bytes in all)` while a big corpus is prepared,
    `on_settings(settings, calibration)` once the text is read, then `callbacks` through the run.
    Under torchrun, pass the `group` that textgen.training.distributed.join() gave.

    `init_from`, a checkpoint, fine-tunes it: the model starts from its best weights, with its
    shape and its vocabulary grown for the new text, into `out` (never the base itself), with
    the fine-tuning defaults of textgen.config.fine_tuning_settings."""
    from textgen.checkpoint import check_output_directory, recover_interrupted_save
    from textgen.config import settings_for
    from textgen.data.prepare import load_or_prepare
    from textgen.devices import training_dtype
    from textgen.training import train as run_training
    from textgen.training.calibration import calibrated_settings
    from textgen.training.distributed import SINGLE

    group, out = group or SINGLE, Path(out)
    base = None if init_from is None else _read_base(Path(init_from), out)
    # Every option checked before anything is done.
    asked = settings_for(settings, preset) if base is None else _fine_tuning_settings(settings, preset, base, group)
    check_output_directory(out, overwrite)
    training_dtype(asked.train.precision, resolve_device(asked.train.device))  # a precision this device lacks
    run, calibration = (asked, None) if base is not None else calibrated_settings(settings, preset, group)
    with _run_lock(out, group):
        if group.is_main:
            recover_interrupted_save(out)
            check_output_directory(out, overwrite)  # again: a run that just ended may have saved there
        # Under torchrun, documents are shared out by rows of the id cache, so even a small file goes there.
        stream = group.active and run.tokenizer.documents != "none"
        text = _read_main_first(group, progress, lambda report: load_or_prepare(
            None if corpus is None else str(corpus), encoding, run.tokenizer, run.train.val_fraction, report, stream))
        if on_settings is not None and group.is_main:
            on_settings(run, calibration)
        return run_training(text, out, run.model, run.tokenizer, run.train, callbacks, group, base)


def _fine_tuning_settings(settings: dict[str, Any], preset: str | None, base: Base, group: Group) -> RunSettings:
    """The settings of a run from `base` (textgen.config.fine_tuning_settings), their notes kept for
    its plan line."""
    from textgen.config import SettingError, fine_tuning_settings

    run = fine_tuning_settings(settings, base.settings, preset)
    if group.active and run.tokenizer.documents != "none":  # they would go through the id cache
        raise SettingError(f"{{documents}} {run.tokenizer.documents} across processes reads the text through the "
                           "id cache, whose vocabulary cannot grow from a base model; fine-tune in one process",
                           "documents")
    base.notes = run.notes
    return run


def _read_base(path: Path, out: Path) -> Base:
    """The checkpoint a fine-tuning run starts from, read whole (its weights' hash included) on the
    CPU; one that is missing, damaged or of another format is a TextgenError, as is an `out` that
    is the base itself, which a fine-tuning run never writes to."""
    from textgen.checkpoint import weights_sha256
    from textgen.config import SettingError
    from textgen.training.fine_tuning import Base

    if out.resolve() == path.resolve():
        raise SettingError(f"{out} is the checkpoint to start from; a fine-tuning run saves into a new {{out}}", "out")

    def read(folder: Path) -> Base:
        loaded = _rebuild(folder, "cpu")
        return Base(path, loaded.info, loaded.model, loaded.tokenizer, weights_sha256(folder))

    return read_whole(path, read)


def resume(
    checkpoint: str | Path,
    corpus: str | Path | None = None,
    callbacks: TrainingCallbacks | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    group: Group | None = None,
    **limits: Any,
) -> TrainingResult:
    """Continue the run saved in `checkpoint` where it stopped, as `textgen train --resume` does
    (which calls this): the losses match a run never interrupted. `corpus` is the text it was
    trained on, where it is now (None: read again from where it was); `limits` are the only
    settings a resumed run may change (max_steps, epochs, max_time: a larger one extends a
    finished run; device). The watchers and `group` are as for train()."""
    from textgen.checkpoint import read_info, recover_interrupted_save
    from textgen.data.prepare import load_or_prepare
    from textgen.devices import training_dtype
    from textgen.training import resume as resume_run
    from textgen.training.distributed import SINGLE

    check_resumable(limits)
    group, checkpoint = group or SINGLE, Path(checkpoint)
    with _run_lock(checkpoint, group):
        if group.is_main:
            recover_interrupted_save(checkpoint)
        group.barrier()
        info = read_info(checkpoint)
        device = resolve_device(limits.get("device", info.training.config.device))
        training_dtype(info.training.config.precision, device)  # a precision this device lacks
        text = None  # found again where the checkpoint's record says, by resume itself
        if corpus is not None:
            stream = info.corpus.streamed or (group.active and info.tokenizer.documents != "none")
            text = _read_main_first(group, progress, lambda report: load_or_prepare(
                str(corpus), info.corpus.encoding or "utf-8", info.tokenizer, info.corpus.val_fraction, report,
                stream))
        return resume_run(checkpoint, text, limits, callbacks, group)


def check_resumable(settings: dict[str, Any]) -> None:
    """Refuse, before anything is read, settings a resumed run cannot take (it keeps its own,
    but for RESUMABLE_SETTINGS) and limits out of range."""
    from textgen.config import RESUMABLE_SETTINGS, SettingError, TrainConfig

    fixed = sorted(set(settings) - set(RESUMABLE_SETTINGS))
    if fixed:
        named = lambda fields: ", ".join("{" + field + "}" for field in fields)  # noqa: E731
        raise SettingError(f"{named(fixed)} cannot change when resuming: a resumed run keeps its own settings "
                           f"(only {named(RESUMABLE_SETTINGS)} may be given)", *fixed, *RESUMABLE_SETTINGS)
    TrainConfig(**settings)


def _run_lock(checkpoint: Path, group: Group) -> Any:
    """The one lock of a run on its checkpoint folder, taken by process 0 for all of them."""
    from textgen.checkpoint.lock import run_lock

    return run_lock(checkpoint) if group.is_main else nullcontext()


def _read_main_first(group: Group, progress: Callable[[str, int, int], None] | None,
                     read: Callable[[Callable[[str, int, int], None] | None], Any]) -> Any:
    """The corpus, read by process 0 first (it prepares the id cache of a big one, reporting its
    progress), then by the others, who find the cache ready."""
    if group.is_main:
        text = read(progress)
    group.barrier()
    return text if group.is_main else read(None)


def load(path: str | Path, device: str = "auto") -> TextModel:
    """Load a checkpoint directory made by `textgen train` (device: auto, cpu, cuda, mps)."""
    loaded = load_checkpoint(Path(path), resolve_device(device))
    return TextModel(loaded.model, loaded.tokenizer, loaded.info, loaded.path)


@dataclass
class LoadedCheckpoint:
    path: Path
    info: CheckpointInfo
    model: RNNLanguageModel  # in eval mode
    tokenizer: Tokenizer


def load_checkpoint(directory: str | Path, device: Any = "cpu") -> LoadedCheckpoint:
    """Rebuild the model and tokenizer a checkpoint holds, ready to sample or evaluate; safe while
    a run is still saving into it (one whole save comes back, never half of two)."""
    loaded = read_whole(Path(directory), lambda folder: _rebuild(folder, device))
    loaded.path = Path(directory)
    return loaded


def _rebuild(directory: Path, device: Any) -> LoadedCheckpoint:
    info = read_info(directory)
    tokenizer = load_tokenizer(directory, info.tokenizer)
    check_vocabulary(directory, tokenizer, info)
    try:
        model = RNNLanguageModel(info.model)
    except (TextgenError, TypeError, ValueError, RuntimeError) as error:
        raise TextgenError(f"{directory / CONFIG_FILE} is corrupt: {str(error).splitlines()[0]}") from None
    model.to(device)
    load_weights(model, directory)
    model.eval()
    return LoadedCheckpoint(path=directory, info=info, model=model, tokenizer=tokenizer)
