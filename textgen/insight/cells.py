"""Cells that mean something: which hidden units track simple properties of the text (inside quotes,
inside brackets, position in the line, start of a word, upper case, digits; for Chinese, inside
「」 or “”, just after a full stop), and how often each LSTM or GRU gate sits saturated near 0 or 1,
after Karpathy, Johnson and Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks".

The model reads the text once with its state carried; each layer's activations are caught on the
way (so only a model with a module per layer, the default with skip connections, shows every
layer; the plain stack shows its top one) and correlated with each property at the last character
of each token.
"""

from __future__ import annotations

import torch

from textgen.evaluation import evaluation_mode
from textgen.model import RNNLanguageModel
from textgen.reports import CellMatch, CellReport
from textgen.tokenizers import Tokenizer

_OPEN_BRACKETS, _CLOSE_BRACKETS = "([{", ")]}"
_CJK_QUOTES = {"「": "」", "“": "”", "『": "』"}
_FULL_STOPS = "。！？"
SATURATED = 0.1  # a gate below this or above 1 - this is saturated
# The first tokens of a text that are read: enough quotes, brackets and lines to correlate with,
# and one pass over them takes a second or two (the state must be carried token after token).
MAX_TOKENS = 16_384


def text_features(text: str, ends: list[int]) -> dict[str, list[float]]:
    """Each feature's value at character positions `ends` (the last character of each token)."""
    values: dict[str, list[float]] = {name: [] for name in (
        "inside quotes", "inside brackets", "position in line", "start of a word", "upper case", "digit",
        "inside 「」 or “”", "after a full stop")}
    quoted, depth, column, cjk_open, after_stop = False, 0, 0, [], False
    wanted = iter(ends)
    target = next(wanted, None)
    for position, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        depth = depth + 1 if char in _OPEN_BRACKETS else max(0, depth - 1) if char in _CLOSE_BRACKETS else depth
        column = 0 if char == "\n" else column + 1
        if char in _CJK_QUOTES:
            cjk_open.append(_CJK_QUOTES[char])
        elif cjk_open and char == cjk_open[-1]:
            cjk_open.pop()
        while target == position:
            previous = text[position - 1] if position else "\n"
            values["inside quotes"].append(float(quoted))
            values["inside brackets"].append(float(depth > 0))
            values["position in line"].append(float(column))
            values["start of a word"].append(float(char.isalpha() and not previous.isalpha()))
            values["upper case"].append(float(char.isupper()))
            values["digit"].append(float(char.isdigit()))
            values["inside 「」 or “”"].append(float(bool(cjk_open)))
            values["after a full stop"].append(float(after_stop))
            target = next(wanted, None)
        if not char.isspace():
            after_stop = char in _FULL_STOPS
    return values


def cell_report(model: RNNLanguageModel, tokenizer: Tokenizer, ids: list[int], text: str) -> CellReport:
    """The units that track each feature best, the activations of the very best, and gate saturation,
    over the first MAX_TOKENS tokens of the text."""
    ids = ids[:MAX_TOKENS]
    pieces = [tokenizer.token_text(i) for i in ids]
    text = text[: sum(map(len, pieces))]
    ends, position = [], -1
    for piece in pieces:
        position += len(piece)
        ends.append(max(position, 0))
    layers, inputs = _layer_activations(model, ids)
    features = text_features(text, ends) if "".join(pieces) == text else {}
    best: list[CellMatch] = []
    for name, values in features.items():
        target = torch.tensor(values, dtype=torch.float64)
        if target.std() == 0:
            continue  # a feature the text never varies (no digits, no Chinese) says nothing
        candidates = [(layer, _correlations(activations, target)) for layer, activations in enumerate(layers)]
        layer, correlations = max(candidates, key=lambda c: float(c[1].abs().max()))
        unit = int(correlations.abs().argmax())
        best.append(CellMatch(name, layer, unit, float(correlations[unit])))
    best.sort(key=lambda match: -abs(match.correlation))
    activations = layers[best[0].layer][:, best[0].unit].tolist() if best else []
    return CellReport(best, activations, pieces, _saturation(model, layers, inputs))


def _correlations(activations: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    a = activations.double() - activations.double().mean(dim=0)
    t = target - target.mean()
    denominator = a.norm(dim=0) * t.norm()
    return torch.where(denominator > 0, (a * t[:, None]).sum(dim=0) / denominator, torch.zeros_like(denominator))


def _layer_activations(model: RNNLanguageModel, ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's h at every token (tokens, hidden), and what each layer read (tokens, input)."""
    modules = list(model.layers) if model.config.skip_connections else [model.rnn]
    caught: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, args, out: caught.append((args[0][0], out[0][0])))
             for module in modules]
    try:
        with evaluation_mode(model):
            model(torch.tensor([ids], device=model.device))
    finally:
        for hook in hooks:
            hook.remove()
    return [out.float().cpu() for _, out in caught], [inp.float().cpu() for inp, _ in caught]


def _saturation(model: RNNLanguageModel, layers: list[torch.Tensor], inputs: list[torch.Tensor]) -> dict:
    """For layers with a module each, of a cell kind with sigmoid gates (all but the plain RNN): the share of
    (unit, token) pairs where each gate is below SATURATED or above 1 - SATURATED, its value
    recomputed from the layer's input, its previous h and its weights."""
    gates = model.cell_kind.sigmoid_gates
    if not gates or not model.config.skip_connections:
        return {}
    report = {}
    for layer, (weights, h, x) in enumerate(zip(model.layer_weights(), layers, inputs)):
        previous = torch.cat([torch.zeros(1, h.shape[1]), h[:-1]])
        pre = x @ weights["weight_ih"].detach().float().cpu().T + weights["bias_ih"].detach().float().cpu()
        if weights["weight_hh"] is not None:  # None: gates that read the input alone (minGRU, minLSTM)
            pre += previous @ weights["weight_hh"].detach().float().cpu().T + weights["bias_hh"].detach().float().cpu()
        size = h.shape[1]
        for name, block in gates.items():
            gate = torch.sigmoid(pre[:, block * size : (block + 1) * size])
            report[f"layer {layer + 1} {name}"] = (float((gate < SATURATED).double().mean()),
                                                   float((gate > 1 - SATURATED).double().mean()))
    return report
