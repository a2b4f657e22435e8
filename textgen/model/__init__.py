"""The network and its fast inference step: ids and a recurrent state in, next-token logits out.

rnn.py holds RNNLanguageModel (embedding, a stack of recurrent layers, output layer); state.py
the state helpers; cells/ the registry of cell kinds (LSTM, GRU, plain RNN), which is all that
knows what a cell name means; fast_step.py runs a model one token at a time for sampling and
priming.
"""

from textgen.model.cells import CELL_KINDS, CellKind, cell_kind
from textgen.model.fast_step import FastStep, ModuleStep, Step, make_step, prime
from textgen.model.rnn import RNNLanguageModel
from textgen.model.state import (
    State, detach_state, map_state, reset_rows, select_state, state_from_parts, state_parts, state_rows,
)

__all__ = [
    "CELL_KINDS", "CellKind", "FastStep", "ModuleStep", "RNNLanguageModel", "State", "Step", "cell_kind",
    "detach_state", "make_step", "map_state", "prime", "reset_rows", "select_state", "state_from_parts",
    "state_parts", "state_rows",
]
