"""The registry of cell kinds: the one place that maps a `cell` name to what the name means.

Adding a cell is a file here with its CellKind, a line in CELL_KINDS, and its name in
textgen.config.CELLS, the torch-free list that the options are checked against before torch is
imported; the two lists are compared when this package loads, so one cannot be forgotten.
"""

from __future__ import annotations

from textgen.config import CELLS, OptionError
from textgen.model.cells.base import CellKind, LayerState, StepInputs
from textgen.model.cells.gru import GRU
from textgen.model.cells.lstm import LSTM
from textgen.model.cells.mingru import MinGRU
from textgen.model.cells.minlstm import MinLSTM
from textgen.model.cells.plain import PlainRNN

CELL_KINDS: dict[str, CellKind] = {kind.name: kind for kind in (
    LSTM(),
    GRU(),
    PlainRNN("tanh"),
    PlainRNN("relu"),
    MinGRU(),
    MinLSTM(),
)}

if set(CELL_KINDS) != set(CELLS):
    raise ImportError(f"textgen.config.CELLS {CELLS} and the cell registry {tuple(CELL_KINDS)} must name "
                      "the same cells")


def cell_kind(name: str) -> CellKind:
    """The kind a `cell` value names; an OptionError naming the field for any other value."""
    try:
        return CELL_KINDS[name]
    except (KeyError, TypeError):
        raise OptionError("cell", f"must be one of {', '.join(CELL_KINDS)}, not {name!r}") from None


__all__ = ["CELL_KINDS", "CellKind", "LayerState", "StepInputs", "cell_kind"]
