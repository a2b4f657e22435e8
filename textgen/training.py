"""The training loop: truncated BPTT over contiguous streams, AdamW with warm-up and cosine decay,
clipping, scheduled validation, best-by-validation checkpoints, and exact resume.

It reports through a TrainingCallbacks object and never prints, so a notebook, the CLI and the
tests all drive the same loop.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textgen.checkpoint import (
    CheckpointInfo, TrainerState, is_checkpoint, load_trainer_state, read_info, save_checkpoint,
    save_trainer_state, update_records,
)
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig, check_train_config, from_dict, to_dict
from textgen.corpus import Corpus, recorded_corpus, split_text
from textgen.documents import IGNORE, DocumentBatches, split_documents
from textgen.devices import precision_note, resolve_device, training_dtype
from textgen.errors import TextgenError
from textgen.evaluation import documents_loss, summarise, total_loss
from textgen.locking import run_lock
from textgen.model import RNNLanguageModel, State, detach_state, reset_rows
from textgen.optimization import WeightAverage, averaged_weights, learning_rate_at, make_optimizer
from textgen.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

EVALUATIONS_PER_RUN = 5  # when --eval-every is 0: validate at 20%, 40%, ... of the run
# ... unless validating has already taken this share of a time budget: in a short run the
# seconds are worth more as training steps (the final validation always happens).
EVALUATION_SHARE = 0.05


@dataclass
class RunPlan:
    """What the run is about to do, reported once before the first step."""

    device: str
    parameters: int
    vocab_size: int
    train_tokens: int
    val_tokens: int
    batch_size: int
    seq_len: int
    steps_per_epoch: int
    max_steps: int | None
    epochs: float | None
    max_time: float | None
    precision: str = "float32"
    resumed_at_step: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class StepReport:
    step: int
    epoch: float
    train_loss: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    elapsed: float
    fraction_done: float


@dataclass
class EvaluationReport:
    step: int
    val_loss: float
    val_bits_per_char: float
    val_perplexity: float
    is_best: bool
    elapsed: float


@dataclass
class TrainingResult:
    checkpoint: Path
    steps: int
    elapsed: float
    # "max-steps", "epochs", "max-time", "early-stop" (no better validation for --patience
    # evaluations) or "interrupted"
    stop_reason: str
    best: dict[str, Any]
    final_train_loss: float
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"


class TrainingCallbacks:
    """Override what you want to watch; every hook is optional."""

    def on_start(self, plan: RunPlan) -> None: ...
    def on_step(self, report: StepReport) -> None: ...
    def on_evaluation(self, report: EvaluationReport) -> None: ...
    def on_checkpoint(self, path: Path) -> None: ...
    def on_stop_requested(self) -> None: ...


@dataclass
class Progress:
    """Where a run stands. It is saved with every checkpoint, so --resume picks up exactly here."""

    step: int = 0
    epoch: int = 0
    epoch_position: int = 0  # windows done in the current epoch
    elapsed: float = 0.0  # seconds of the budget spent, evaluations included
    training_seconds: float = 0.0  # of which in training steps, for tokens per second
    tokens_seen: int = 0
    evaluation_seconds: float = 0.0
    best_score: float = math.inf
    evaluations_since_best: int = 0
    next_eval_fraction: float = 1.0 / EVALUATIONS_PER_RUN
    smoothed_loss: float = math.nan
    loss_since_eval: list[float] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def batchify(ids: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay a stream out as `rows` contiguous slices, inputs and next-token targets side by side:

        stream  a b c d e f g h i j k l m        rows = 3
        inputs  | a b c d |   targets | b c d e |
                | e f g h |           | f g h i |
                | i j k l |           | j k l m |

    A window of the training loop is a band of columns; each row's state flows from one window
    to the next, so the model sees its slice of the corpus in order.
    """
    length = (ids.numel() - 1) // rows
    inputs = ids[: rows * length].view(rows, length)
    targets = ids[1 : rows * length + 1].view(rows, length)
    return inputs, targets


class _StopRequest:
    """The first Ctrl-C (or SIGTERM) asks the loop to stop after the current step; a second one aborts."""

    def __init__(self, callbacks: TrainingCallbacks) -> None:
        self.requested = False
        self._deferring = False
        self._abort_after = False
        self._callbacks = callbacks
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and not self._deferring:
            raise KeyboardInterrupt
        if self.requested:
            self._abort_after = True
            return
        self.requested = True
        self._callbacks.on_stop_requested()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a second Ctrl-C until the block is done: a save is never cut between its renames."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._abort_after:
            raise KeyboardInterrupt


def train(
    corpus: Corpus,
    out: Path,
    model_config: ModelConfig | None = None,
    tokenizer_config: TokenizerConfig | None = None,
    train_config: TrainConfig | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> TrainingResult:
    """Train a language model on `corpus` and keep its best-by-validation weights in `out`.
    Another run training into `out` at the same time is refused (TextgenError)."""
    model_config = model_config or ModelConfig()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    config = train_config or TrainConfig()
    check_train_config(config)
    with run_lock(out):
        train_text, _ = split_text(corpus.text, config.val_fraction, tokenizer_config.documents)
        # Char vocabularies come from the whole file so held-out text never holds an unseen character;
        # word and subword vocabularies are learnt from the training part only.
        tokenizer = build_tokenizer(tokenizer_config, corpus.text if tokenizer_config.kind == "char" else train_text)
        torch.manual_seed(config.seed)
        run = _Run(corpus, Path(out), model_config, tokenizer_config, tokenizer, config)
        return run.loop(callbacks or TrainingCallbacks())


def resume(
    checkpoint: Path,
    corpus: Corpus | None = None,
    limits: dict[str, Any] | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> TrainingResult:
    """Continue the run saved in `checkpoint` from the step where it stopped, with its optimiser,
    schedule, data position and random state, so the losses match a run never interrupted.

    `corpus` defaults to the text the run was trained on, read again from where it was;
    `limits` (max_steps, epochs, max_time) replace the run's own, counted from its start."""
    checkpoint = Path(checkpoint)
    with run_lock(checkpoint):
        return _resume(checkpoint, corpus, limits, callbacks)


def _resume(
    checkpoint: Path, corpus: Corpus | None, limits: dict[str, Any] | None, callbacks: TrainingCallbacks | None
) -> TrainingResult:
    info = read_info(checkpoint)
    saved = load_trainer_state(checkpoint)
    how = "give the training text: textgen train FILE --resume CHECKPOINT"
    if corpus is None:
        corpus = recorded_corpus(info.corpus, how)
    elif corpus.sha256 != info.corpus.get("sha256"):
        raise TextgenError(f"{corpus.source} is not the text {checkpoint} was trained on; resume needs the same text")
    config = from_dict(TrainConfig, {"adam_beta1": 0.9, **info.training})  # 0.9: runs from before the option
    if limits:
        config = TrainConfig(**{**to_dict(config), **limits})
    check_train_config(config)
    tokenizer = load_tokenizer(checkpoint, info.tokenizer)
    run = _Run(corpus, checkpoint, info.model, info.tokenizer, tokenizer, config, saved)
    if run.reached_limit():
        raise TextgenError(
            f"{checkpoint} already reached its limit at step {run.progress.step:,} "
            f"({run.progress.elapsed:.0f} s); give a larger --max-steps, --epochs or --max-time to train on"
        )
    return run.loop(callbacks or TrainingCallbacks())


class _Run:
    """One training run: its data, model, optimiser and progress, built fresh or from a saved state."""

    def __init__(
        self,
        corpus: Corpus,
        out: Path,
        model_config: ModelConfig,
        tokenizer_config: TokenizerConfig,
        tokenizer: Tokenizer,
        config: TrainConfig,
        saved: TrainerState | None = None,
    ) -> None:
        self.out, self.config, self.tokenizer = out, config, tokenizer
        self.device = resolve_device(config.device)
        mode = tokenizer_config.documents
        train_text, val_text = split_text(corpus.text, config.val_fraction, mode)
        self.val_characters = len(val_text)
        self.notes: list[str] = []
        self.documents: DocumentBatches | None = None
        if mode == "none":
            self._lay_out_stream(train_text, val_text)
        else:
            self._lay_out_documents(train_text, val_text, mode)

        model_config = ModelConfig(**{**to_dict(model_config), "vocab_size": tokenizer.vocab_size})
        try:
            self.model = RNNLanguageModel(model_config).to(self.device)
        except (RuntimeError, MemoryError) as error:
            raise TextgenError(
                f"could not build a model of this size on {self.device}: {str(error).splitlines()[0][:200]}"
            ) from None
        self.optimizer = make_optimizer(self.model, config)
        self.autocast_dtype = training_dtype(config.precision, self.device)
        note = precision_note(self.autocast_dtype, self.device)
        if note:
            self.notes.append(note)
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.info = CheckpointInfo(
            model=model_config,
            tokenizer=tokenizer_config,
            corpus={
                "source": corpus.source, "name": corpus.name,
                "path": str(corpus.path) if corpus.path else None, "sha256": corpus.sha256,
                "encoding": corpus.encoding,
                "characters": len(corpus.text), "val_fraction": config.val_fraction,
                "train_characters": len(train_text), "val_characters": len(val_text),
                "documents": mode,
            },
            training=to_dict(config),
        )
        self.progress = Progress()
        self.state: State | None = None
        self.resumed_at: int | None = None
        self.saved_once = False
        if saved is not None:
            self._restore(saved)

    def _lay_out_stream(self, train_text: str, val_text: str) -> None:
        config = self.config
        self.train_ids = torch.from_numpy(np.asarray(self.tokenizer.encode(train_text), dtype=np.int64))
        self.val_ids = torch.from_numpy(np.asarray(self.tokenizer.encode(val_text), dtype=np.int64))
        if self.train_ids.numel() < config.seq_len + 1:
            raise TextgenError(
                f"the training text is {self.train_ids.numel()} tokens long, shorter than one training window "
                f"(--seq-len {config.seq_len}); use a longer text or a smaller --seq-len"
            )
        self.batch_size = min(config.batch_size, (self.train_ids.numel() - 1) // config.seq_len)
        if self.batch_size < config.batch_size:
            self.notes.append(f"batch size lowered to {self.batch_size} so every row holds at least one window")
        self.window = config.seq_len
        self.inputs, self.targets = (t.to(self.device) for t in batchify(self.train_ids, self.batch_size))
        self.steps_per_epoch = math.ceil(self.inputs.shape[1] / config.seq_len)
        self.context_id = int(self.train_ids[-1])
        self.train_tokens, self.val_tokens = self.train_ids.numel(), self.val_ids.numel()

    def _lay_out_documents(self, train_text: str, val_text: str, mode: str) -> None:
        encode = self.tokenizer.encode
        train_documents = [encode(d) for d in split_documents(train_text, mode)]
        self.val_documents = [encode(d) for d in split_documents(val_text, mode)]
        self.documents = DocumentBatches(train_documents, self.tokenizer.end_id, self.config.batch_size,
                                         self.config.seq_len, self.config.seed)
        self.batch_size, self.window = self.documents.rows, self.documents.window
        self.steps_per_epoch = self.documents.steps_in_epoch(0)
        self.train_tokens = self.documents.tokens
        self.val_tokens = sum(len(ids) + 1 for ids in self.val_documents)
        self.notes.append(f"{len(train_documents):,} training and {len(self.val_documents):,} validation "
                          f"documents ({mode}), each read from a fresh state")

    # --- the loop -------------------------------------------------------------------------

    def loop(self, callbacks: TrainingCallbacks) -> TrainingResult:
        config, progress = self.config, self.progress
        self.max_steps, self.epochs, self.max_time = _limits(self.config)
        if config.max_time is None and self.max_time == config.default_max_time:
            self.notes.append(f"no limit given: training for {self.max_time:.0f} s (set --max-time, --max-steps or --epochs)")
        callbacks.on_start(RunPlan(
            device=str(self.device), parameters=self.model.num_parameters(), vocab_size=self.tokenizer.vocab_size,
            train_tokens=self.train_tokens, val_tokens=self.val_tokens, batch_size=self.batch_size,
            seq_len=self.window, steps_per_epoch=self.steps_per_epoch, max_steps=self.max_steps,
            epochs=self.epochs, max_time=self.max_time, notes=self.notes, resumed_at_step=self.resumed_at,
            precision="bfloat16 autocast" if self.autocast_dtype else "float32",
        ))
        self.model.train()
        # The budget counts from here: tokenizing and building the model are not training time.
        self.started = time.perf_counter() - progress.elapsed
        stop_reason = ""
        with _StopRequest(callbacks) as self.stop:
            while True:
                done = self.fraction_done()
                stop_reason = self._stop_reason(done)
                if stop_reason:
                    break
                if config.eval_every and progress.step and progress.step % config.eval_every == 0:
                    stop_reason = self._evaluate_and_save(callbacks)
                elif not config.eval_every and done >= progress.next_eval_fraction and self._may_evaluate():
                    # Skip thresholds a slow step or evaluation jumped over, rather than evaluating back to back.
                    progress.next_eval_fraction = (math.floor(done * EVALUATIONS_PER_RUN) + 1) / EVALUATIONS_PER_RUN
                    stop_reason = self._evaluate_and_save(callbacks)
                if stop_reason:
                    break
                self._step(done, callbacks)
            if stop_reason == "interrupted":
                self._save_for_resume(callbacks)
            elif stop_reason != "early-stop":
                self._evaluate_and_save(callbacks)
        return TrainingResult(
            checkpoint=self.out, steps=progress.step, elapsed=time.perf_counter() - self.started,
            stop_reason=stop_reason, best=dict(self.info.best), final_train_loss=progress.smoothed_loss,
            metrics=list(progress.metrics),
        )

    def fraction_done(self) -> float:
        step = self.progress.step
        fractions = [0.0]
        if self.max_steps:
            fractions.append(step / self.max_steps)
        if self.epochs:
            fractions.append(step / (self.epochs * self.steps_per_epoch))
        if self.max_time:
            fractions.append((time.perf_counter() - self.started) / self.max_time)
        return max(fractions)

    def _may_evaluate(self) -> bool:
        return not self.max_time or self.progress.evaluation_seconds < EVALUATION_SHARE * self.max_time

    def reached_limit(self) -> bool:
        """Whether a saved run has nothing left to do under its limits."""
        max_steps, epochs, max_time = _limits(self.config)
        step = self.progress.step
        return bool((max_steps and step >= max_steps) or (epochs and step >= epochs * self.steps_per_epoch)
                    or (max_time and self.progress.elapsed >= max_time))

    def _stop_reason(self, done: float) -> str:
        step = self.progress.step
        if self.max_steps and step >= self.max_steps:
            return "max-steps"
        if self.epochs and step >= self.epochs * self.steps_per_epoch:
            return "epochs"
        if self.max_time and done >= 1.0:
            return "max-time"
        if self.stop.requested:
            return "interrupted"
        return ""

    def _step(self, done: float, callbacks: TrainingCallbacks) -> None:
        config, progress, model = self.config, self.progress, self.model
        x, y = self._next_window()

        step_started = time.perf_counter()
        lr = learning_rate_at(config, progress.step, done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            logits, state = model(x, self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip if config.clip > 0 else math.inf)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            kept = f"the last good checkpoint is kept in {self.out}" if self.saved_once else "no checkpoint was saved yet"
            raise TextgenError(
                f"training diverged at step {progress.step}: the loss became {loss_value}; {kept}; "
                "try a lower --learning-rate"
            )
        self.optimizer.step()
        if self.average is not None:
            self.average.update(progress.step)
        self.state = detach_state(state)
        progress.step += 1
        progress.epoch_position += 1
        progress.training_seconds += time.perf_counter() - step_started
        progress.tokens_seen += x.numel() if self.documents is None else int((y != IGNORE).sum())
        progress.loss_since_eval.append(loss_value)
        smoothed = progress.smoothed_loss
        progress.smoothed_loss = loss_value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss_value
        progress.elapsed = time.perf_counter() - self.started
        callbacks.on_step(StepReport(
            step=progress.step, epoch=progress.step / self.steps_per_epoch, train_loss=progress.smoothed_loss,
            learning_rate=lr, grad_norm=float(grad_norm),
            tokens_per_second=progress.tokens_seen / progress.training_seconds,
            elapsed=progress.elapsed, fraction_done=self.fraction_done(),
        ))

    def _next_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next window's inputs and targets, with the state zeroed where a stream or document starts."""
        progress = self.progress
        steps = self.steps_per_epoch if self.documents is None else self.documents.steps_in_epoch(progress.epoch)
        if progress.epoch_position >= steps:
            progress.epoch, progress.epoch_position, self.state = progress.epoch + 1, 0, None
        if self.state is None:
            self.state = self.model.init_state(self.batch_size, self.device)
        position = progress.epoch_position
        if self.documents is None:
            columns = slice(position * self.window, (position + 1) * self.window)
            return self.inputs[:, columns], self.targets[:, columns]
        layout = self.documents.layout(progress.epoch)
        self.state = reset_rows(self.state, layout.starts[position].to(self.device))
        return layout.inputs[position].to(self.device), layout.targets[position].to(self.device)

    # --- evaluation and saving -------------------------------------------------------------

    def _evaluate_and_save(self, callbacks: TrainingCallbacks) -> str:
        """Validate, record, save if best; returns "early-stop" when patience has run out."""
        config, progress = self.config, self.progress
        elapsed = time.perf_counter() - self.started
        row: dict[str, Any] = {
            "step": progress.step, "epoch": progress.step / self.steps_per_epoch, "elapsed": round(elapsed, 3),
            "train_loss": float(np.mean(progress.loss_since_eval)) if progress.loss_since_eval else None,
            "learning_rate": learning_rate_at(config, progress.step, self.fraction_done()),
            "tokens_per_second": progress.tokens_seen / progress.training_seconds if progress.training_seconds else None,
        }
        progress.loss_since_eval.clear()
        if self.val_tokens:
            evaluation_started = time.perf_counter()
            with averaged_weights(self.average):
                if self.documents is None:
                    nats, count = total_loss(self.model, self.val_ids, self.context_id)
                else:
                    nats, count = documents_loss(self.model, self.val_documents, self.tokenizer.end_id)
            progress.evaluation_seconds += time.perf_counter() - evaluation_started
            result = summarise(nats, count, self.val_characters)
            row.update(val_loss=result.loss, val_bits_per_char=result.bits_per_char, val_perplexity=result.perplexity)
            score = result.loss
        else:  # nothing held out: the latest weights are the best we know
            score = -progress.step
        progress.metrics.append(row)
        is_best = score < progress.best_score  # a NaN validation loss is never best
        if is_best:
            progress.best_score = score
            progress.evaluations_since_best = 0
            self.info.best = {k: row[k] for k in ("step", "elapsed", "val_loss", "val_bits_per_char",
                                                  "val_perplexity", "train_loss") if k in row}
        else:
            progress.evaluations_since_best += 1
        progress.elapsed = time.perf_counter() - self.started
        if row.get("val_loss") is not None:
            callbacks.on_evaluation(EvaluationReport(
                step=progress.step, val_loss=row["val_loss"], val_bits_per_char=row["val_bits_per_char"],
                val_perplexity=row["val_perplexity"], is_best=is_best, elapsed=elapsed,
            ))
        self._record_training()
        with self.stop.deferred():
            if is_best:
                trainer_state = self._trainer_state()
                with averaged_weights(self.average):
                    save_checkpoint(self.out, self.model, self.tokenizer, self.info, progress.metrics, trainer_state)
                self.saved_once = True
                callbacks.on_checkpoint(self.out)
            elif self.saved_once:  # never write this run's records beside another run's weights
                update_records(self.out, self.info, progress.metrics)
                save_trainer_state(self.out, self._trainer_state())
        if config.patience and progress.evaluations_since_best >= config.patience:
            return "early-stop"
        return ""

    def _save_for_resume(self, callbacks: TrainingCallbacks) -> None:
        """On Ctrl-C: save where the run stands, without spending seconds on a validation the
        user did not ask for, unless none has been made yet (a checkpoint needs its figures)."""
        if not self.saved_once:
            self._evaluate_and_save(callbacks)
            return
        self.progress.elapsed = time.perf_counter() - self.started
        self._record_training()
        with self.stop.deferred():
            update_records(self.out, self.info, self.progress.metrics)
            save_trainer_state(self.out, self._trainer_state())
        callbacks.on_checkpoint(self.out)

    def _record_training(self) -> None:
        self.info.training = {**to_dict(self.config), "steps": self.progress.step,
                              "elapsed": round(self.progress.elapsed, 3)}

    def _trainer_state(self) -> TrainerState:
        """Copies of everything the next step depends on (copies: the averaged weights may be
        swapped in for the save that follows)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, param in self.model.named_parameters():
            tensors[f"weights.{name}"] = param.detach()
        for index, values in self.optimizer.state_dict()["state"].items():
            for key, value in values.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
        if self.average is not None:
            for index, value in enumerate(self.average.averages):
                tensors[f"average.{index}"] = value
        if self.state is not None:
            for index, value in enumerate(self.state if isinstance(self.state, tuple) else (self.state,)):
                tensors[f"state.{index}"] = value
        tensors["random.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["random.cuda"] = torch.cuda.get_rng_state(self.device)
        tensors = {name: value.detach().to("cpu", copy=True).contiguous() for name, value in tensors.items()}
        return TrainerState(tensors=tensors, record={"progress": asdict(self.progress), "best": self.info.best})

    def _restore(self, saved: TrainerState) -> None:
        tensors, record = saved.tensors, saved.record
        try:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    param.copy_(tensors[f"weights.{name}"])
            optimizer_state = self.optimizer.state_dict()
            by_index: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    by_index.setdefault(int(index), {})[name] = value
            optimizer_state["state"] = by_index
            self.optimizer.load_state_dict(optimizer_state)
            if self.average is not None:
                for index, average in enumerate(self.average.averages):
                    average.copy_(tensors[f"average.{index}"])
            states = [tensors[f"state.{i}"].to(self.device) for i in range(2) if f"state.{i}" in tensors]
            self.state = (tuple(states) if len(states) == 2 else states[0]) if states else None
            torch.set_rng_state(tensors["random.torch"])
            if self.device.type == "cuda" and "random.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["random.cuda"], self.device)
            self.progress = Progress(**record["progress"])
            self.info.best = dict(record.get("best") or {})
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise TextgenError(f"{self.out}'s trainer state does not match its model: {str(error).splitlines()[0][:200]}") from None
        self.resumed_at = self.progress.step
        self.saved_once = is_checkpoint(self.out)


def _limits(config: TrainConfig) -> tuple[int | None, float | None, float | None]:
    if config.max_steps is None and config.epochs is None and config.max_time is None:
        return None, None, config.default_max_time
    return config.max_steps, config.epochs, config.max_time
