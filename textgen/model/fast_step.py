"""The inference engine: one token a step for a batch of rows, computed from the model's own
weights with no module call, and the one-pass priming of a seed phrase.

FastStep is tied to RNNLanguageModel's weight layout (gates stacked along dim 0, skip
connections) and takes each step's arithmetic from the model's cell kind (textgen.model.cells);
make_step checks it against model.forward on a few tokens and falls back to ModuleStep, so a
model whose forward reads its weights otherwise is still run exactly. The sampler (textgen.sampling)
and anything else that walks a model token by token use these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
import torch
import torch.nn.functional as F

from textgen.model.cells import CellKind, LayerState
from textgen.model.rnn import RNNLanguageModel
from textgen.model.state import State, map_state, select_state, state_parts

# A prompt at least this long is primed with oneDNN's RNN kernel, which costs milliseconds per
# call but runs a long sequence faster than the plain one (100 vs 160 ms for 1,000 characters).
_ONEDNN_PROMPT_TOKENS = 64
# The first layer's input projection becomes a per-token lookup table when it is at most this
# many numbers (64 MB): all of a char model, not a 20,000-word vocabulary at 512 wide.
_MAX_TABLE_ELEMENTS = 16_000_000


@dataclass
class LayerWeights:
    """One recurrent layer in torch's layout: gates stacked along dim 0 (LSTM i, f, g, o; GRU r, z, n)."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor | None  # None: a kind whose gates read the input alone (minGRU, minLSTM)
    bias_ih: torch.Tensor | None
    bias_hh: torch.Tensor | None


def _layer_weights(model: RNNLanguageModel) -> list[LayerWeights]:
    """The recurrent weights, layer by layer (dropout needs nothing here: it is off at eval time)."""
    return [LayerWeights(**weights) for weights in model.layer_weights()]


class _Linear:
    """x @ W^T + b with W prepared once, computed so that each row's result is the same whatever
    the batch size (MKL's addmm changes its summation order from 4 rows up, which would let the
    number of samples change sample 1):

    - a large W is packed for oneDNN on a CPU: a third of addmm's time for 16 rows, the same for 1;
    - a small W (a char model's output layer) is one row-by-matrix product per row (batched),
      where oneDNN's fixed cost of ~10 us would dominate;
    - elsewhere (a GPU, a torch without these kernels), addmm with W transposed once.
    """

    SMALL = 131_072  # weights; a 65 x 512 output layer is small, a 2048 x 512 recurrent one is not

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, packed: bool = True) -> None:
        weight = weight.detach()
        self.bias = None if bias is None else bias.detach().contiguous()
        self.transposed = weight.t().contiguous()
        self.mode = "addmm"
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return
        if weight.numel() <= self.SMALL:
            self.mode = "rows"
            self._expanded = self.transposed.unsqueeze(0)
            return
        if packed and torch.backends.mkldnn.is_available():
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 16)
                probe = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(0))
                got = torch.ops.mkldnn._linear_pointwise(probe, packed, self.bias, "none", [], "")
                if torch.allclose(got, self._addmm(probe), rtol=1e-4, atol=1e-4):
                    self.packed, self.mode = packed, "packed"
                    self.transposed = None  # not needed any more: keep one copy of the weights
            except (AttributeError, RuntimeError, NotImplementedError):
                pass  # a torch without these internal kernels: addmm it is

    def _addmm(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.transposed if self.bias is None else torch.addmm(self.bias, x, self.transposed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "packed":
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.mode == "rows":
            if self._expanded.shape[0] != x.shape[0]:
                self._expanded = self.transposed.expand(x.shape[0], *self.transposed.shape)
            if self.bias is None:
                return torch.bmm(x.unsqueeze(1), self._expanded).squeeze(1)
            return torch.baddbmm(self.bias, x.unsqueeze(1), self._expanded).squeeze(1)
        return self._addmm(x)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


class _Layer:
    """One layer's weights arranged for a single step (the StepInputs a cell kind's fast_step reads).

    A layer reads the token's embedding (the first layer; every layer with skip connections), the
    layer below's h (every layer but the first), or both, beside its own h. The embedding's share
    of the input projection, embedding @ W^T + biases, becomes a lookup table per token when it is
    small. The rows come in the order the cell kind asks for. [rest of the input, h] is multiplied
    by [W_ih | W_hh] in one product, unless the kind keeps the hidden part apart.
    """

    def __init__(self, kind: CellKind, weights: LayerWeights, embedding: torch.Tensor | None,
                 packed: bool = True) -> None:
        w_ih, w_hh, b_ih, b_hh = (t.detach() if t is not None else None for t in
                                  (weights.weight_ih, weights.weight_hh, weights.bias_ih, weights.bias_hh))
        self.reads_hidden = w_hh is not None
        order = kind.fast_row_order(w_hh.shape[1]) if self.reads_hidden else None
        if order is not None:
            order = order.to(w_ih.device)
            w_ih, w_hh = w_ih[order], w_hh[order]
            b_ih, b_hh = (None if b is None else b[order] for b in (b_ih, b_hh))
        self.separate = kind.separate_hidden
        input_bias = b_ih if self.separate else _add(b_ih, b_hh)
        self.table = None
        self.embedding = embedding
        rest = w_ih  # the input columns still to multiply at each step
        if embedding is not None and embedding.shape[0] * w_ih.shape[0] <= _MAX_TABLE_ELEMENTS:
            self.table = embedding @ w_ih[:, : embedding.shape[1]].t()
            if input_bias is not None:
                self.table += input_bias
            self.embedding, rest, input_bias = None, w_ih[:, embedding.shape[1] :], None
        self.reads_rest = rest.shape[1] > 0
        if self.separate:
            self.input = _Linear(rest, input_bias, packed) if self.reads_rest else None
            self.hidden = _Linear(w_hh, b_hh, packed)
        elif self.reads_rest:
            columns = [rest, w_hh] if self.reads_hidden else [rest]
            self.joint_linear = _Linear(torch.cat(columns, dim=1), input_bias, packed)
        elif self.reads_hidden:
            self.hidden = _Linear(w_hh, None, packed)

    def _rest(self, tokens: torch.Tensor, below: torch.Tensor | None) -> list[torch.Tensor]:
        """The inputs not covered by the table: the embedding when there is none, and the layer below's h."""
        parts = [] if self.embedding is None else [F.embedding(tokens, self.embedding)]
        return parts if below is None else [*parts, below]

    def joint(self, tokens: torch.Tensor, below: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """The gates' inputs, from the tokens' ids, the layer below's h (or None) and h (unread
        by a kind without hidden-to-hidden weights)."""
        if self.reads_rest:
            hidden = [h] if self.reads_hidden else []
            gates = self.joint_linear(torch.cat([*self._rest(tokens, below), *hidden], dim=1))
        elif self.reads_hidden:
            gates = self.hidden(h)
        else:  # the first layer of a kind without W_hh: the table is all there is
            return self.table.index_select(0, tokens)
        return gates if self.table is None else gates.add_(self.table.index_select(0, tokens))

    def apart(self, tokens: torch.Tensor, below: torch.Tensor | None,
              h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gates' inputs from the layer's inputs and from h, apart."""
        from_input = self.input(torch.cat(self._rest(tokens, below), dim=1)) if self.reads_rest else None
        if self.table is not None:
            looked_up = self.table.index_select(0, tokens)
            from_input = looked_up if from_input is None else from_input.add_(looked_up)
        return from_input, self.hidden(h)


class FastStep:
    """One token for each row of a batch, computed from the model's own weights with no module
    call: the same distribution as model.forward (tests compare the two), several times faster
    than calling nn.LSTM one step at a time. The arithmetic of a step is the cell kind's.

    The state is a list with one tuple of the cell's state parts per layer, (h, c) or (h,), each
    (batch, hidden).
    """

    kind = "fast"

    def __init__(self, model: RNNLanguageModel, differentiable: bool = False) -> None:
        """`differentiable`: keep every product one that autograd can go back through (no weights
        packed for oneDNN), for measuring gradients with respect to the state."""
        self.cell_kind = model.cell_kind
        embedding = model.embedding.weight.detach()
        self.skip_connections = model.config.skip_connections
        self.layers = [_Layer(self.cell_kind, w, embedding if k == 0 or self.skip_connections else None,
                              not differentiable)
                       for k, w in enumerate(_layer_weights(model))]
        self.decoder = _Linear(model.decoder.weight, model.decoder.bias, not differentiable)
        # With n-gram counts, the state's last entry is (the tokens read,), as (batch, order - 1).
        self.mix_counts = model.mix_step if model.config.ngram_order else None

    def from_model_state(self, state: State, batch: int) -> list[LayerState]:
        """The model's (layers, 1, hidden) state after priming, repeated for `batch` rows."""
        parts = [part[:, 0].unsqueeze(1).repeat(1, batch, 1) for part in state_parts(state)]
        cells = parts[: len(self.cell_kind.state_parts)]
        layers = [tuple(part[k].contiguous() for part in cells) for k in range(len(self.layers))]
        if self.mix_counts is not None:
            layers.append((parts[-1][0].contiguous(),))
        return layers

    def select(self, state: list[LayerState], rows: torch.Tensor) -> list[LayerState]:
        return [tuple(part[rows] for part in layer) for layer in state]

    def __call__(self, tokens: torch.Tensor, state: list[LayerState]) -> tuple[torch.Tensor, list[LayerState]]:
        """tokens: (batch,) ids -> logits (batch, vocab) for the token after them, and the new state."""
        new_state = self._layers(tokens, state)
        below = new_state[-1][0]
        if self.skip_connections:
            outputs = self.decoder(torch.cat([layer_state[0] for layer_state in new_state], dim=1))
        else:
            outputs = self.decoder(below)
        if self.mix_counts is None:
            return outputs, new_state
        logits, history = self.mix_counts(outputs, tokens, state[-1][0])
        return logits, [*new_state, (history,)]

    def advance(self, tokens: torch.Tensor, state: list[LayerState]) -> list[LayerState]:
        """The state after tokens, exactly as __call__ computes it, without the prediction that
        nobody reads while a prompt is read (the output layer and the counts' distribution)."""
        new_state = self._layers(tokens, state)
        if self.mix_counts is None:
            return new_state
        return [*new_state, (RNNLanguageModel.shifted_history(state[-1][0], tokens),)]

    def _layers(self, tokens: torch.Tensor, state: list[LayerState]) -> list[LayerState]:
        below: torch.Tensor | None = None
        new_state: list[LayerState] = []
        for layer, layer_state in zip(self.layers, state):
            layer_state = self.cell_kind.fast_step(layer, tokens, below, layer_state)
            below = layer_state[0]
            new_state.append(layer_state)
        return new_state


class ModuleStep:
    """One token a step through model.forward itself (oneDNN off: its RNN kernel costs milliseconds
    per call). The fallback when FastStep does not reproduce the model."""

    kind = "module"

    def __init__(self, model: RNNLanguageModel) -> None:
        self.model = model

    def from_model_state(self, state: State, batch: int) -> State:
        return map_state(state, lambda part: part.repeat(1, batch, 1))

    def select(self, state: State, rows: torch.Tensor) -> State:
        return select_state(state, rows)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        with _without_onednn():
            logits, state = self.model(tokens.view(-1, 1), state)
        return logits[:, -1], state

    def advance(self, tokens: torch.Tensor, state: State) -> State:
        return self(tokens, state)[1]


Step = FastStep | ModuleStep


@torch.no_grad()
def make_step(model: RNNLanguageModel) -> Step:
    """The fast step when it reproduces model.forward on a few tokens, else the module step.

    Every cell kind brings its own fast step, so the module step is for a genuine mismatch: a
    forward that is not the plain reading of the weights (a subclass, a patched forward), or a
    product the fast step cannot run where the model lives. The check costs a few milliseconds
    and keeps the promise of the model's exact distribution."""
    model.eval()
    try:
        fast = FastStep(model)
        if _reproduces_forward(fast, model):
            return fast
    except RuntimeError:
        pass  # weights shaped or placed otherwise than the fast step reads them: forward still runs them
    return ModuleStep(model)


def _reproduces_forward(fast: FastStep, model: RNNLanguageModel) -> bool:
    """Whether `fast` gives model.forward's logits, within float noise, on three tokens."""
    ids = torch.arange(3, device=model.device) % model.config.vocab_size
    with _without_onednn():
        expected, _ = model(ids.view(1, -1))
    logits, state = prime(model, ids[:1].tolist())
    state = fast.from_model_state(state, 1)
    got = [logits]
    for token in ids[1:]:
        logits, state = fast(token.view(1), state)
        got.append(logits)
    scale = max(1.0, float(expected.abs().max()))
    return torch.allclose(torch.cat(got), expected[0], rtol=1e-4, atol=1e-4 * scale)


def prime(model: RNNLanguageModel, ids: list[int]) -> tuple[torch.Tensor, State]:
    """Read the seed phrase in one pass: the logits (1, vocab) for the next token, and the state."""
    device = model.device
    kernel = _without_onednn() if len(ids) < _ONEDNN_PROMPT_TOKENS else nullcontext()
    with kernel:
        logits, state = model(torch.tensor([ids], device=device))
    return logits[:, -1], state


@contextmanager
def _without_onednn() -> Iterator[None]:
    """oneDNN's RNN kernel costs milliseconds per call at one token a step; the plain one ~10x less.
    (torch.backends.mkldnn.flags would also reset TF32 settings and warn about it.)"""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
