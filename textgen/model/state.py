"""The recurrent state a model carries between calls, whatever its cell: one tensor per state
part, each (layers, batch, hidden).

A cell kind names its parts (textgen.model.cells: an LSTM carries h and c, the others h alone);
as torch's own modules take it, a state of one part is that tensor and a state of several is a
tuple, h first. The functions here treat every part alike, so they hold for any cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

State = torch.Tensor | tuple[torch.Tensor, ...]


def state_parts(state: State) -> tuple[torch.Tensor, ...]:
    """The state's tensors, h first."""
    return state if isinstance(state, tuple) else (state,)


def state_from_parts(parts: Sequence[torch.Tensor]) -> State:
    """The state torch's modules take: the tensor itself for one part, a tuple for several."""
    return parts[0] if len(parts) == 1 else tuple(parts)


def map_state(state: State, change: Callable[[torch.Tensor], torch.Tensor]) -> State:
    """The same change applied to every part of a state."""
    return state_from_parts([change(part) for part in state_parts(state)])


def join_layers(states: Sequence[State]) -> State:
    """One state for the whole stack from the states of single layers, in order from the bottom."""
    return state_from_parts([torch.cat(parts) for parts in zip(*map(state_parts, states))])


def layer_state(state: State, k: int) -> State:
    """Layer k's part of a (layers, batch, hidden) state, as a one-layer module takes it."""
    return map_state(state, lambda part: part[k : k + 1].contiguous())


def detach_state(state: State) -> State:
    """Cut the graph between windows: truncated BPTT keeps the values, drops the history."""
    return map_state(state, torch.Tensor.detach)


def reset_rows(state: State, starts: torch.Tensor) -> State:
    """Zero the state of the rows where `starts` (one bool per row) is set: a new document begins."""
    keep = (~starts).to(dtype=torch.float32).view(1, -1, 1)
    return map_state(state, lambda part: part * keep.to(part.device, part.dtype))


def select_state(state: State, rows: torch.Tensor | slice) -> State:
    """The state of some batch rows (the batch is dimension 1)."""
    return map_state(state, lambda part: part[:, rows])


def state_rows(state: State, rows: torch.Tensor | slice) -> State:
    """Some batch rows of a state as tensors of their own (contiguous, no view into the whole
    batch's storage): one process's share of a state saved for the whole batch."""
    return map_state(state, lambda part: part[:, rows].contiguous())
