"""The training loop: truncated BPTT over the windows of a stream or of documents, AdamW with
warm-up and cosine decay, clipping, scheduled validation, best-by-validation checkpoints, and
exact resume.

    train(corpus, out, ...)  ─▶ training_text: tokenizer, batches, validation set ──────┐
    resume(checkpoint, ...)  ─▶ the same with config.json's tokenizer, then the snapshot ┤
                                                                                       ▼
    Trainer.run: until a limit, Ctrl-C or patience stops it
        validate when due ─▶ save (a new best: the whole checkpoint; else records and trainer state)
        step: next window ─▶ forward ─▶ loss ─▶ backward ─▶ clip ─▶ AdamW ─▶ carry the state
    then a last validation and save (or, after Ctrl-C, a save of where the run stands)

It reports through a TrainingCallbacks object and never prints, so a notebook, the CLI and the
tests all drive the same loop.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textgen.checkpoint import (
    CheckpointInfo, TrainerState, check_vocabulary, is_checkpoint, load_trainer_state, load_weights, read_info,
    save_checkpoint, save_trainer_state, update_records,
)
from textgen.checkpoint.records import BestRecord, MetricsRow, TrainingRecord
from textgen.config import (
    MAX_COUNTED_TOKENS, ModelConfig, SettingError, TokenizerConfig, TrainConfig, fitted_ngram_order, to_dict,
)
from textgen.data import IGNORE, Window
from textgen.data.corpus import Corpus
from textgen.data.prepare import PreparedCorpus
from textgen.devices import precision_note, resolve_device, training_dtype
from textgen.errors import TextgenError
from textgen.evaluation import summarise
from textgen.model import RNNLanguageModel, State, detach_state, map_state, reset_rows, state_rows
from textgen.model.ngram import NGramCounts
from textgen.tokenizers import load_tokenizer
from textgen.training.callbacks import EvaluationReport, RunPlan, StepReport, TrainingCallbacks, TrainingResult
from textgen.training.distributed import SINGLE, Group
from textgen.training.fine_tuning import Base, start_from
from textgen.training.interrupt import StopRequest
from textgen.training.limits import Limits
from textgen.training.optimization import WeightAverage, averaged_weights, learning_rate_at, make_optimizer
from textgen.training.readings import PendingStep, StepFigures, StepReadings
from textgen.training.regularization import activation_penalties
from textgen.training.run_data import SavedText, TrainingText, recorded_text, training_text
from textgen.training.snapshot import EVALUATIONS_PER_RUN, Progress, restore, snapshot

_STOP_REASONS = ["", "max-steps", "epochs", "max-time", "interrupted", "early-stop"]
# With --eval-every 0, validation stops once it has taken this share of a time budget: in a short
# run the seconds are worth more as training steps (the final validation always happens).
EVALUATION_SHARE = 0.05


def train(
    corpus: Corpus | PreparedCorpus,
    out: Path,
    model_config: ModelConfig | None = None,
    tokenizer_config: TokenizerConfig | None = None,
    train_config: TrainConfig | None = None,
    callbacks: TrainingCallbacks | None = None,
    group: Group = SINGLE,
    base: Base | None = None,
) -> TrainingResult:
    """Train a language model on `corpus` (a text in memory, or a big corpus prepared into the id
    cache by textgen.data.prepare) and keep its best-by-validation weights in `out`. Under
    torchrun, `group` (textgen.training.distributed.join()) shares the batch among the processes.
    With a `base`, the model starts from its weights, its vocabulary grown for the new text
    (the configs then come from textgen.config.fine_tuning_settings).
    The run lock is not taken here: textgen.api.train takes it before it reads the text."""
    model_config = model_config or ModelConfig()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    config = train_config or TrainConfig()
    text = training_text(corpus, tokenizer_config, config, group,
                         grown_from=base.tokenizer if base is not None else None)
    torch.manual_seed(config.seed)
    trainer = Trainer(text, Path(out), model_config, tokenizer_config, config, group, base)
    return trainer.run(callbacks if callbacks and group.is_main else TrainingCallbacks())


def resume(
    checkpoint: Path,
    corpus: Corpus | PreparedCorpus | None = None,
    limits: dict[str, Any] | None = None,
    callbacks: TrainingCallbacks | None = None,
    group: Group = SINGLE,
) -> TrainingResult:
    """Continue the run saved in `checkpoint` from the step where it stopped, with its optimiser,
    schedule, data position and random state, so the losses match a run never interrupted.

    `corpus` defaults to the text the run was trained on, read again from where it was;
    `limits` (max_steps, epochs, max_time) replace the run's own, counted from its start.
    The run lock is not taken here: textgen.api.resume takes it."""
    checkpoint = Path(checkpoint)
    info = read_info(checkpoint)
    saved = load_trainer_state(checkpoint)
    if corpus is None:
        corpus = recorded_text(info.corpus, info.tokenizer, "give the training text as {corpus}")
    config = info.training.config
    if limits:
        config = TrainConfig(**{**to_dict(config), **limits})
    tokenizer = load_tokenizer(checkpoint, info.tokenizer)
    check_vocabulary(checkpoint, tokenizer, info)
    text = training_text(corpus, info.tokenizer, config, group, SavedText(checkpoint, info.corpus.sha256, tokenizer))
    trainer = Trainer(text, checkpoint, info.model, info.tokenizer, config, group)
    trainer.info.base = info.base  # a fine-tuning run still started where it did
    load_weights(trainer.model, checkpoint)  # a damaged checkpoint is refused, not trained over
    trainer.restore(saved)
    progress = trainer.progress
    if trainer.limits.reached(progress.step, trainer.steps_per_epoch, progress.elapsed):
        raise SettingError(f"{checkpoint} already reached its limit at step {progress.step:,} "
                           f"({progress.elapsed:.0f} s); give a larger {{max_steps}}, {{epochs}} or {{max_time}} "
                           "to train on", "max_steps", "epochs", "max_time")
    return trainer.run(callbacks if callbacks and group.is_main else TrainingCallbacks())


class Trainer:
    """One run: its model, optimiser, data, progress and checkpoint, built fresh (then `restore`d
    for a resume) and driven by `run`."""

    def __init__(self, text: TrainingText, out: Path, model_config: ModelConfig, tokenizer_config: TokenizerConfig,
                 config: TrainConfig, group: Group = SINGLE, base: Base | None = None) -> None:
        self.out, self.config, self.tokenizer, self.group = out, config, text.tokenizer, group
        self.device = resolve_device(config.device)
        self.data = text.data
        self.limits = Limits.of(config)
        self.steps_per_epoch = self.data.batches.steps_in_epoch(0)
        order, why = fitted_ngram_order(model_config.ngram_order, self.tokenizer.vocab_size)
        if why:
            self.data.notes.append(why)
        model_config = ModelConfig(**{**to_dict(model_config), "vocab_size": self.tokenizer.vocab_size,
                                      "ngram_order": order})
        try:
            self.model = RNNLanguageModel(model_config).to(self.device)
        except (RuntimeError, MemoryError) as error:
            raise TextgenError(
                f"could not build a model of this size on {self.device}: {str(error).splitlines()[0][:200]}"
            ) from None
        if base is not None:  # before the weight average copies the weights
            self.data.notes[:0] = [start_from(self.model, base, self.tokenizer), *base.notes]
        self.optimizer = make_optimizer(self.model, config)
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.info = CheckpointInfo(model=model_config, tokenizer=tokenizer_config, corpus=text.record,
                                   training=TrainingRecord(config), base=base.lineage() if base else None)
        self.progress = Progress()
        self.state: State | None = None
        self.resumed_at: int | None = None
        self.saved_once = False
        self.counted = False  # whether the model mixes in counts of the text it trains on
        self._set_up_steps()

    def _set_up_steps(self) -> None:
        """What every step uses, decided once so that _step reads straight through: the forward
        pass (through DDP when several processes train, so the gradients are averaged over them
        during backward; everything else uses the model itself), the loss, the precision, and the
        figures kept on the device until they are read together."""
        self.forward, self.loss_of = self.model, self._mean_loss
        if self.group.active:
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            # No buffers to keep in step: n-gram counts are the same in every process, and large.
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                     broadcast_buffers=False)
            self.loss_of = self._share_of_global_loss
        self.autocast_dtype = training_dtype(self.config.precision, self.device)
        self.autocast = partial(torch.autocast, self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                enabled=self.autocast_dtype is not None)
        self.penalised = bool(self.config.activation_penalty or self.config.activation_change_penalty)
        self.max_grad_norm = self.config.clip if self.config.clip > 0 else math.inf
        self.readings = StepReadings(self.device)

    def restore(self, saved: TrainerState) -> None:
        self.state, self.progress, self.info.best = restore(saved, self.model, self.optimizer, self.average, str(self.out))
        if self.group.active and self.state is not None:  # this process's rows of the saved batch
            batches = self.data.batches
            rows = slice(batches.first_row, batches.first_row + batches.rows)
            self.state = state_rows(self.state, rows)
        self.resumed_at = self.progress.step
        self.saved_once = is_checkpoint(self.out)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, callbacks: TrainingCallbacks) -> TrainingResult:
        progress = self.progress
        callbacks.on_start(self._plan())
        self.model.train()
        # The budget counts from here: tokenizing and building the model are not training time.
        self.started = time.perf_counter() - progress.elapsed
        self._count_ngrams()  # but counting is: it is part of what the model learns
        with StopRequest(callbacks.on_stop_requested) as self.stop:
            while True:
                stop_reason, validate, done = self._decide()
                if stop_reason:
                    break
                if validate:
                    self._catch_up(callbacks)
                    self._save(self._validate(callbacks), callbacks)
                    if self.config.patience and progress.evaluations_since_best >= self.config.patience:
                        stop_reason = "early-stop"
                        break
                self._step(done, callbacks)
            self._catch_up(callbacks)
            if stop_reason == "interrupted" and self.saved_once:
                self._save_where_the_run_stands(callbacks)  # no validation the user did not ask for
            elif stop_reason != "early-stop":
                self._save(self._validate(callbacks), callbacks)
        self.forward = self.model  # let the DDP wrapper go now, before the process group is left
        return TrainingResult(
            checkpoint=self.out, steps=progress.step, elapsed=self._elapsed(), stop_reason=stop_reason,
            best=self.info.best, final_train_loss=progress.smoothed_loss, metrics=list(progress.metrics),
            info=self.info, parameters=self.model.num_parameters(),
        )

    def _count_ngrams(self) -> None:
        """Count the training text for a model that mixes in n-gram counts, unless they came with
        the weights (a resumed run). Each prediction on this text then leaves its own occurrence
        out of them (RNNLanguageModel.forward's counted_targets)."""
        order = self.model.config.ngram_order
        if order and self.model.ngram is None:
            ids = self.data.ids_to_count(MAX_COUNTED_TOKENS)
            self.model.attach_counts(NGramCounts.count(ids, self.model.config.vocab_size, order))
        self.counted = bool(order)

    def _decide(self) -> tuple[str, bool, float]:
        """Whether to stop (and why), whether to validate, and how far along the run is: decided by
        process 0 and followed by all, so every process stops and validates at the same step."""
        progress = self.progress
        done = self._fraction_done()
        stop_reason = self.limits.reached(progress.step, self.steps_per_epoch, self._elapsed())
        if not stop_reason and self.group.any(self.stop.requested):
            stop_reason = "interrupted"
        validate = not stop_reason and self._validation_due(done)
        code, validate, done = self.group.decide([_STOP_REASONS.index(stop_reason), float(validate), done])
        return _STOP_REASONS[int(code)], bool(validate), done

    def _step(self, done: float, callbacks: TrainingCallbacks) -> None:
        """One step: forward, loss, backward, clip, optimiser step, then carry the state on; its
        figures stay on the device until the next read."""
        config, progress = self.config, self.progress
        window = self._next_window()
        started = time.perf_counter()
        learning_rate = self._set_learning_rate(done)
        counts = {"counted_targets": window.targets, "with_network_logits": True} if self.counted else {}
        with self.autocast():
            logits, state, *extras = self.forward(window.inputs, self.state, with_top_output=self.penalised, **counts)
        network = extras.pop() if self.counted else None
        loss, reported, scored = self.loss_of(logits, window.targets)
        if network is not None:  # the network's own prediction is trained too (RNNLanguageModel.mix_counts)
            loss = loss + self.loss_of(network, window.targets)[0]
        if self.penalised:  # shapes the gradient only: the loss reported stays the cross-entropy
            # Under DDP the processes' means are averaged: the global mean for streams, whose rows
            # are all scored; for documents padded unevenly, rows weigh a little differently.
            loss = loss + activation_penalties(extras[0], window.targets, config.activation_penalty,
                                               config.activation_change_penalty)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        pending = PendingStep(progress.step + 1, reported, grad_norm, scored, learning_rate, 0.0, 0.0, 0.0)
        self.readings.add(pending)
        figures = self._read_figures() if self.readings.due else []  # a diverged loss stops before its step
        self.optimizer.step()
        if self.average is not None:
            self.average.update(progress.step)
        self.state = detach_state(state)
        self._count_step(window, pending, started)
        self._report_steps(figures, callbacks)

    def _set_learning_rate(self, done: float) -> float:
        learning_rate = learning_rate_at(self.config, self.progress.step, done)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        return learning_rate

    def _mean_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """The mean cross-entropy of the window's scored predictions: the loss trained and reported."""
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
        return loss, loss, None

    def _share_of_global_loss(self, logits: torch.Tensor,
                              targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This process's summed cross-entropy, to report (the processes' sums are added when read),
        and, to train, that sum divided by the predictions of the whole global batch over the world:
        DDP averages the gradients, so rows padded unevenly (documents) weigh as in one process."""
        scored = self.data.batches.scored_in_all_rows(self.progress.epoch, self.progress.epoch_position)
        summed = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=IGNORE, reduction="sum")
        return summed * (self.group.world / max(1, scored)), summed, scored

    def _count_step(self, window: Window, pending: PendingStep, started: float) -> None:
        """Move the run on by the step just taken, and time it for its report."""
        progress = self.progress
        progress.step += 1
        progress.epoch_position += 1
        progress.training_seconds += time.perf_counter() - started
        progress.tokens_seen += self.data.batches.scored_tokens(window)
        progress.elapsed = self._elapsed()
        pending.tokens_per_second = progress.tokens_seen / progress.training_seconds
        pending.elapsed, pending.fraction_done = progress.elapsed, self._fraction_done()

    def _read_figures(self) -> list[StepFigures]:
        """The losses of the steps not read yet, in one read from the device; a non-finite one stops the run."""
        started = time.perf_counter()
        figures = self.readings.take(self.group.sum if self.group.active else None)
        self.progress.training_seconds += time.perf_counter() - started  # the wait for the device's queue
        for figure in figures:
            if not math.isfinite(figure.loss):
                kept = f"the last good checkpoint is kept in {self.out}" if self.saved_once else \
                    "no checkpoint was saved yet"
                raise SettingError(f"training diverged at step {figure.pending.step - 1}: the loss became "
                                   f"{figure.loss}; {kept}; try a lower {{learning_rate}}", "learning_rate")
        return figures

    def _report_steps(self, figures: list[StepFigures], callbacks: TrainingCallbacks) -> None:
        progress = self.progress
        for figure in figures:
            step, loss_value = figure.pending, figure.loss
            progress.loss_since_eval.append(loss_value)
            smoothed = progress.smoothed_loss
            progress.smoothed_loss = loss_value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss_value
            callbacks.on_step(StepReport(
                step=step.step, epoch=step.step / self.steps_per_epoch, train_loss=progress.smoothed_loss,
                learning_rate=step.learning_rate, grad_norm=figure.grad_norm, tokens_per_second=step.tokens_per_second,
                elapsed=step.elapsed, fraction_done=step.fraction_done,
            ))

    def _catch_up(self, callbacks: TrainingCallbacks) -> None:
        """Report the steps whose figures are still on the device: before a validation, a save or the end."""
        self._report_steps(self._read_figures(), callbacks)

    def _next_window(self) -> Window:
        """The next window, with the state zeroed where an epoch, a stream or a document starts."""
        progress, batches = self.progress, self.data.batches
        if progress.epoch_position >= batches.steps_in_epoch(progress.epoch):
            progress.epoch, progress.epoch_position, self.state = progress.epoch + 1, 0, None
        if self.state is None:
            self.state = self.model.init_state(batches.rows, self.device)
        window = batches.window_at(progress.epoch, progress.epoch_position)
        if window.starts is not None:
            self.state = reset_rows(self.state, window.starts.to(self.device))
        return window._replace(inputs=window.inputs.to(self.device, non_blocking=True),
                               targets=window.targets.to(self.device, non_blocking=True))

    # --- when ---------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _fraction_done(self) -> float:
        return self.limits.fraction_done(self.progress.step, self.steps_per_epoch, self._elapsed())

    def _validation_due(self, done: float) -> bool:
        progress, every = self.progress, self.config.eval_every
        if every:
            return progress.step > 0 and progress.step % every == 0
        if done < progress.next_eval_fraction:
            return False
        max_time = self.limits.max_time
        if max_time and progress.evaluation_seconds >= EVALUATION_SHARE * max_time:
            return False
        # Skip thresholds a slow step or validation jumped over, rather than validating back to back.
        progress.next_eval_fraction = (math.floor(done * EVALUATIONS_PER_RUN) + 1) / EVALUATIONS_PER_RUN
        return True

    # --- validate, then save ----------------------------------------------------------------------

    def _validate(self, callbacks: TrainingCallbacks) -> bool:
        """Score the held-out text, record a metrics row; whether it is a new best."""
        progress, validation = self.progress, self.data.validation
        elapsed = self._elapsed()
        row = MetricsRow(
            step=progress.step, epoch=progress.step / self.steps_per_epoch, elapsed=round(elapsed, 3),
            train_loss=float(np.mean(progress.loss_since_eval)) if progress.loss_since_eval else None,
            learning_rate=learning_rate_at(self.config, progress.step, self._fraction_done()),
            tokens_per_second=progress.tokens_seen / progress.training_seconds if progress.training_seconds else None,
        )
        progress.loss_since_eval.clear()
        if validation.tokens:
            validation_started = time.perf_counter()
            with averaged_weights(self.average):
                nats, count = validation.score(self.model, self.group)
            progress.evaluation_seconds += time.perf_counter() - validation_started
            result = summarise(nats, count, validation.characters)
            row.val_loss, row.val_bits_per_char, row.val_perplexity = result.loss, result.bits_per_char, result.perplexity
            score = result.loss
        else:  # nothing held out: the latest weights are the best we know
            score = -progress.step
        progress.metrics.append(row)
        is_best = score < progress.best_score  # a NaN validation loss is never best
        if is_best:
            progress.best_score, progress.evaluations_since_best = score, 0
            self.info.best = BestRecord.of(row)
        else:
            progress.evaluations_since_best += 1
        progress.elapsed = self._elapsed()
        if row.val_loss is not None:
            callbacks.on_evaluation(EvaluationReport(
                step=progress.step, val_loss=row.val_loss, val_bits_per_char=row.val_bits_per_char,
                val_perplexity=row.val_perplexity, is_best=is_best, elapsed=elapsed,
            ))
        return is_best

    def _save(self, is_best: bool, callbacks: TrainingCallbacks) -> None:
        """A new best replaces the whole checkpoint; otherwise only its records and trainer state
        change (never this run's records beside another run's weights, before its first save)."""
        self._record_training()
        if not is_best and not self.saved_once:
            return
        trainer_state = self._snapshot()  # on every process: it gathers the carried state's rows
        if not self.group.is_main:
            self.saved_once = True
            return
        with self.stop.deferred():
            if is_best:
                with averaged_weights(self.average):
                    save_checkpoint(self.out, self.model, self.tokenizer, self.info, self.progress.metrics,
                                    trainer_state)
                self.saved_once = True
                callbacks.on_checkpoint(self.out)
            else:
                update_records(self.out, self.info, self.progress.metrics)
                save_trainer_state(self.out, trainer_state)

    def _save_where_the_run_stands(self, callbacks: TrainingCallbacks) -> None:
        self.progress.elapsed = self._elapsed()
        self._record_training()
        trainer_state = self._snapshot()
        if not self.group.is_main:
            return
        with self.stop.deferred():
            update_records(self.out, self.info, self.progress.metrics)
            save_trainer_state(self.out, trainer_state)
        callbacks.on_checkpoint(self.out)

    def _record_training(self) -> None:
        self.info.training = TrainingRecord(self.config, self.progress.step, self.progress.elapsed)

    def _snapshot(self) -> TrainerState:
        state = self.state
        if self.group.active and state is not None:  # the whole batch's state, as one process would hold it
            state = map_state(state, lambda part: self.group.gather_rows(part, dim=1))
        return snapshot(self.model, self.optimizer, self.average, state, self.progress, self.info.best)

    def _plan(self) -> RunPlan:
        notes = list(self.data.notes)
        if self.model.config.ngram_order:
            tokens = self.data.batches.tokens
            which = "all" if tokens <= MAX_COUNTED_TOKENS else f"the first {MAX_COUNTED_TOKENS:,}"
            notes.append(f"predictions mixed with {self.model.config.ngram_order}-gram counts of {which} training tokens")
        note = precision_note(self.autocast_dtype, self.device)
        if note:
            notes.append(note)
        limits = self.limits
        if self.config.max_time is None and limits.max_time == self.config.default_max_time:
            notes.append(f"no limit given: training for {limits.max_time:.0f} s (set a time, step or epoch limit to choose)")
        batches = self.data.batches
        return RunPlan(
            device=str(self.device), parameters=self.model.num_parameters(), vocab_size=self.tokenizer.vocab_size,
            train_tokens=batches.tokens, val_tokens=self.data.validation.tokens,
            batch_size=getattr(batches, "global_rows", batches.rows), processes=self.group.world,
            seq_len=batches.window, steps_per_epoch=self.steps_per_epoch, max_steps=limits.max_steps,
            epochs=limits.epochs, max_time=limits.max_time, notes=notes, resumed_at_step=self.resumed_at,
            precision="bfloat16 autocast" if self.autocast_dtype else "float32",
        )
