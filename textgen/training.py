"""The training loop: truncated BPTT over contiguous streams, AdamW with warm-up and cosine decay,
clipping, scheduled validation and best-by-validation checkpoints.

It reports through a TrainingCallbacks object and never prints, so a notebook, the CLI and the
tests all drive the same loop.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textgen.checkpoint import CheckpointInfo, save_checkpoint, update_records
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig, check_train_config, to_dict
from textgen.corpus import Corpus, split_text
from textgen.devices import resolve_device
from textgen.errors import TextgenError
from textgen.evaluation import summarise, total_loss
from textgen.model import RNNLanguageModel, detach_state
from textgen.tokenizers import build_tokenizer

EVALUATIONS_PER_RUN = 5  # when --eval-every is 0: validate at 20%, 40%, ... of the run


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
    stop_reason: str  # "max-steps", "epochs", "max-time" or "interrupted"
    best: dict[str, Any]
    final_train_loss: float

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


def learning_rate_at(config: TrainConfig, step: int, fraction_done: float) -> float:
    """Linear warm-up over the first steps, then cosine decay to min_lr_ratio by the end of the run."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction_done)))
    return config.learning_rate * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


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


def _limits(config: TrainConfig) -> tuple[int | None, float | None, float | None]:
    if config.max_steps is None and config.epochs is None and config.max_time is None:
        return None, None, config.default_max_time
    return config.max_steps, config.epochs, config.max_time


def train(
    corpus: Corpus,
    out: Path,
    model_config: ModelConfig | None = None,
    tokenizer_config: TokenizerConfig | None = None,
    train_config: TrainConfig | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> TrainingResult:
    """Train a language model on `corpus` and keep its best-by-validation weights in `out`."""
    model_config = model_config or ModelConfig()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    config = train_config or TrainConfig()
    callbacks = callbacks or TrainingCallbacks()
    check_train_config(config)

    train_text, val_text = split_text(corpus.text, config.val_fraction)
    # Char vocabularies come from the whole file so held-out text never holds an unseen character;
    # word and subword vocabularies are learnt from the training part only.
    tokenizer = build_tokenizer(tokenizer_config, corpus.text if tokenizer_config.kind == "char" else train_text)
    train_ids = torch.from_numpy(np.asarray(tokenizer.encode(train_text), dtype=np.int64))
    val_ids = torch.from_numpy(np.asarray(tokenizer.encode(val_text), dtype=np.int64))
    if train_ids.numel() < config.seq_len + 1:
        raise TextgenError(
            f"the training text is {train_ids.numel()} tokens long, shorter than one training window "
            f"(--seq-len {config.seq_len}); use a longer text or a smaller --seq-len"
        )
    notes = []
    batch_size = min(config.batch_size, (train_ids.numel() - 1) // config.seq_len)
    if batch_size < config.batch_size:
        notes.append(f"batch size lowered to {batch_size} so every row holds at least one window")

    _seed_everything(config.seed)
    device = resolve_device(config.device)
    model_config = ModelConfig(**{**to_dict(model_config), "vocab_size": tokenizer.vocab_size})
    try:
        model = RNNLanguageModel(model_config).to(device)
    except (RuntimeError, MemoryError) as error:
        raise TextgenError(
            f"could not build a model of this size on {device}: {str(error).splitlines()[0][:200]}"
        ) from None
    optimizer = _make_optimizer(model, config)

    inputs, targets = (t.to(device) for t in batchify(train_ids, batch_size))
    steps_per_epoch = math.ceil(inputs.shape[1] / config.seq_len)
    max_steps, epochs, max_time = _limits(config)
    if max_time == config.default_max_time and config.max_time is None:
        notes.append(f"no limit given: training for {max_time:.0f} s (set --max-time, --max-steps or --epochs)")
    callbacks.on_start(RunPlan(
        device=str(device), parameters=model.num_parameters(), vocab_size=tokenizer.vocab_size,
        train_tokens=train_ids.numel(), val_tokens=val_ids.numel(), batch_size=batch_size,
        seq_len=config.seq_len, steps_per_epoch=steps_per_epoch, max_steps=max_steps, epochs=epochs,
        max_time=max_time, notes=notes,
    ))

    info = CheckpointInfo(
        model=model_config,
        tokenizer=tokenizer_config,
        corpus={
            "source": corpus.source, "name": corpus.name,
            "path": str(corpus.path) if corpus.path else None, "sha256": corpus.sha256,
            "encoding": corpus.encoding,
            "characters": len(corpus.text), "val_fraction": config.val_fraction,
            "train_characters": len(train_text), "val_characters": len(val_text),
        },
        training=to_dict(config),
    )
    context_id = int(train_ids[-1])
    metrics: list[dict[str, Any]] = []
    best_loss = math.inf
    step = 0
    epoch_position = 0  # windows done in the current epoch
    state = None
    loss_since_eval: list[float] = []
    ema_loss = float("nan")
    training_seconds = 0.0
    tokens_seen = 0
    next_eval_fraction = 1.0 / EVALUATIONS_PER_RUN
    stop_reason = ""
    saved_once = False
    model.train()

    def fraction_done() -> float:
        fractions = [0.0]
        if max_steps:
            fractions.append(step / max_steps)
        if epochs:
            fractions.append(step / (epochs * steps_per_epoch))
        if max_time:
            fractions.append((time.perf_counter() - started) / max_time)
        return max(fractions)

    def evaluate_and_save() -> None:
        nonlocal best_loss, saved_once
        elapsed = time.perf_counter() - started
        row: dict[str, Any] = {
            "step": step, "epoch": step / steps_per_epoch, "elapsed": round(elapsed, 3),
            "train_loss": float(np.mean(loss_since_eval)) if loss_since_eval else None,
            "learning_rate": learning_rate_at(config, step, fraction_done()),
            "tokens_per_second": tokens_seen / training_seconds if training_seconds else None,
        }
        loss_since_eval.clear()
        if val_ids.numel():
            nats, count = total_loss(model, val_ids, context_id)
            result = summarise(nats, count, len(val_text))
            row.update(val_loss=result.loss, val_bits_per_char=result.bits_per_char,
                       val_perplexity=result.perplexity)
            score = result.loss
        else:  # nothing held out: the latest weights are the best we know
            score = -step
        metrics.append(row)
        is_best = score < best_loss  # a NaN validation loss is never best
        if is_best:
            best_loss = score
            info.best = {k: row[k] for k in ("step", "elapsed", "val_loss", "val_bits_per_char",
                                             "val_perplexity", "train_loss") if k in row}
        info.training = {**to_dict(config), "steps": step, "elapsed": round(elapsed, 3)}
        if row.get("val_loss") is not None:
            callbacks.on_evaluation(EvaluationReport(
                step=step, val_loss=row["val_loss"], val_bits_per_char=row["val_bits_per_char"],
                val_perplexity=row["val_perplexity"], is_best=is_best, elapsed=elapsed,
            ))
        if is_best:
            with stop.deferred():
                save_checkpoint(out, model, tokenizer, info, metrics)
            saved_once = True
            callbacks.on_checkpoint(out)
        else:
            if saved_once:  # never write this run's records beside another run's weights
                update_records(out, info, metrics)

    # The budget counts from here: tokenizing and building the model are not training time.
    started = time.perf_counter()
    with _StopRequest(callbacks) as stop:
        while True:
            done = fraction_done()
            if max_steps and step >= max_steps:
                stop_reason = "max-steps"
            elif epochs and step >= epochs * steps_per_epoch:
                stop_reason = "epochs"
            elif max_time and done >= 1.0:
                stop_reason = "max-time"
            elif stop.requested:
                stop_reason = "interrupted"
            if stop_reason:
                break
            if config.eval_every and step and step % config.eval_every == 0:
                evaluate_and_save()
            elif not config.eval_every and done >= next_eval_fraction:
                # Skip thresholds a slow step or evaluation jumped over, rather than evaluating back to back.
                next_eval_fraction = (math.floor(done * EVALUATIONS_PER_RUN) + 1) / EVALUATIONS_PER_RUN
                evaluate_and_save()

            if epoch_position == steps_per_epoch:
                epoch_position, state = 0, None
            if state is None:
                state = model.init_state(batch_size, device)
            start = epoch_position * config.seq_len
            x = inputs[:, start : start + config.seq_len]
            y = targets[:, start : start + config.seq_len]

            step_started = time.perf_counter()
            lr = learning_rate_at(config, step, done)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, state = model(x, state)
            state = detach_state(state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), config.clip if config.clip > 0 else float("inf")
            )
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                kept = f"the last good checkpoint is kept in {out}" if metrics else "no checkpoint was saved yet"
                raise TextgenError(
                    f"training diverged at step {step}: the loss became {loss_value}; {kept}; "
                    "try a lower --learning-rate"
                )
            optimizer.step()
            step += 1
            epoch_position += 1
            training_seconds += time.perf_counter() - step_started
            tokens_seen += x.numel()
            loss_since_eval.append(loss_value)
            ema_loss = loss_value if math.isnan(ema_loss) else 0.95 * ema_loss + 0.05 * loss_value
            callbacks.on_step(StepReport(
                step=step, epoch=step / steps_per_epoch, train_loss=ema_loss, learning_rate=lr,
                grad_norm=float(grad_norm), tokens_per_second=tokens_seen / training_seconds,
                elapsed=time.perf_counter() - started, fraction_done=fraction_done(),
            ))
        evaluate_and_save()

    return TrainingResult(
        checkpoint=out, steps=step, elapsed=time.perf_counter() - started, stop_reason=stop_reason,
        best=dict(info.best), final_train_loss=ema_loss,
    )


def _make_optimizer(model: RNNLanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    # Decay the weight matrices only: shrinking biases and gains towards zero buys nothing.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, betas=(0.9, 0.99),
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
