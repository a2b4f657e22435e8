"""The network and its fast inference step: ids and a recurrent state in, next-token logits out.

rnn.py holds RNNLanguageModel (embedding, LSTM/GRU/RNN stack, output layer) and the state
helpers; fast_step.py runs it one token at a time for sampling and priming.
"""

from textgen.model.fast_step import FastStep, ModuleStep, Step, make_step, prime
from textgen.model.rnn import RNNLanguageModel, State, detach_state, reset_rows, select_state

__all__ = [
    "FastStep", "ModuleStep", "RNNLanguageModel", "State", "Step", "detach_state", "make_step", "prime",
    "reset_rows", "select_state",
]
