"""Where a run stands, and the trainer state that carries it across `--resume`: the run's
progress record and copies of every tensor the next step depends on.

    trainer.safetensors
      weights.<name>            the live weights (the checkpoint's model file may hold the average)
      optimizer.<i>.<key>       AdamW's moments and step count, per parameter
      average.<i>               the moving average of the weights, when --ema-decay is on
      state.0, state.1, ...     the recurrent state carried into the next window, one tensor per part
                                of the cell's state (h, and c for an LSTM)
      random.torch, random.cuda the random generators (dropout masks, document order)
      metadata "record"         {"progress": Progress as JSON, "best": the best validation's figures}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from textgen.checkpoint import TrainerState
from textgen.checkpoint.records import BestRecord, MetricsRow
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel, State, state_from_parts, state_parts
from textgen.training.optimization import WeightAverage

EVALUATIONS_PER_RUN = 5  # when --eval-every is 0: validate at 20%, 40%, ... of the run


@dataclass
class Progress:
    """Where a run stands. It is saved with every checkpoint, so --resume picks up exactly here.
    The field names are the trainer-state format: renaming one breaks resuming older runs."""

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
    metrics: list[MetricsRow] = field(default_factory=list)


def snapshot(
    model: RNNLanguageModel,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    state: State | None,
    progress: Progress,
    best: BestRecord,
) -> TrainerState:
    """Copies of everything the next step depends on (copies: the averaged weights may be
    swapped in for the save that follows)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensors[f"weights.{name}"] = param.detach()
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    if average is not None:
        for index, value in enumerate(average.averages):
            tensors[f"average.{index}"] = value
    if state is not None:
        for index, value in enumerate(state_parts(state)):
            tensors[f"state.{index}"] = value
    tensors["random.torch"] = torch.get_rng_state()
    if model.device.type == "cuda":
        tensors["random.cuda"] = torch.cuda.get_rng_state(model.device)
    tensors = {name: value.detach().to("cpu", copy=True).contiguous() for name, value in tensors.items()}
    record = {"progress": {**asdict(progress), "metrics": [row.to_json() for row in progress.metrics]},
              "best": best.to_json()}
    return TrainerState(tensors=tensors, record=record)


def restore(
    saved: TrainerState,
    model: RNNLanguageModel,
    optimizer: torch.optim.Optimizer,
    average: WeightAverage | None,
    where: str,
) -> tuple[State | None, Progress, BestRecord]:
    """Put a snapshot back into the model, optimiser and average; the carried state, the progress
    and the best figures come back. `where` names the checkpoint in errors."""
    tensors, record = saved.tensors, saved.record
    device = model.device
    try:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(tensors[f"weights.{name}"])
        optimizer_state = optimizer.state_dict()
        by_index: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                by_index.setdefault(int(index), {})[name] = value
        optimizer_state["state"] = by_index
        optimizer.load_state_dict(optimizer_state)
        if average is not None:
            for index, value in enumerate(average.averages):
                value.copy_(tensors[f"average.{index}"])
        state = _carried_state(tensors, model)
        torch.set_rng_state(tensors["random.torch"])
        if device.type == "cuda" and "random.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["random.cuda"], device)
        progress = Progress(**record["progress"])
        progress.metrics = [MetricsRow.from_json(row) for row in progress.metrics]
        best = BestRecord.from_json(record.get("best"))
    except (KeyError, TypeError, ValueError, RuntimeError, TextgenError) as error:
        raise TextgenError(f"{where}'s trainer state does not match its model: {str(error).splitlines()[0][:200]}") from None
    return state, progress, best


def _carried_state(tensors: dict[str, torch.Tensor], model: RNNLanguageModel) -> State | None:
    """The saved recurrent state, one tensor per part the model's cell carries; None if none was saved."""
    if "state.0" not in tensors:
        return None
    return state_from_parts([tensors[f"state.{index}"].to(model.device) for index in range(model.state_part_count)])
