"""Generating text: prime the model with a seed phrase in one pass, then draw token after token
for a batch of samples, carrying the recurrent state so each new token costs the same (the text
is never fed again).

    seed phrase ──prime (model.forward, once)──▶ logits, state ──┐
          ┌────────────────────────────────────────────────────────┘
          ▼
    repetition penalty ▶ temperature ▶ top-k ▶ top-p ▶ draw (one uniform per sample) ──▶ token
          ▲                                                                             │
          └──────────── FastStep(token, state): cached weights, one token a step ◀──────┘

Each sample draws from its own random stream, seeded from the seed and its index, so sample 1
is the same whether 1 or 16 are made, and a sample that ends early changes no other.
Yields text pieces as they are made; knows nothing of files or terminals.
"""

from __future__ import annotations

import bisect
import itertools
import random
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from textgen.config import MAX_SEED, SampleConfig, check_sample_config
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel, State, select_state
from textgen.tokenizers import StreamDecoder, Tokenizer, describe_symbols, encode_leniently, end_marker

# A prompt at least this long is primed with oneDNN's RNN kernel, which costs milliseconds per
# call but runs a long sequence faster than the plain one (100 vs 160 ms for 1,000 characters).
_ONEDNN_PROMPT_TOKENS = 64
# The first layer's input projection becomes a per-token lookup table when it is at most this
# many numbers (64 MB): all of a char model, not a 20,000-word vocabulary at 512 wide.
_MAX_TABLE_ELEMENTS = 16_000_000
# A draw's uniform number is scaled by this so that u * total stays below total after rounding.
_BELOW_ONE = 1.0 - 2.0**-50
# Up to this many candidates in all (one sample at top-k 40 is 40), the draw is done in Python.
_PYTHON_DRAW_MAX_CANDIDATES = 256
# Logits are float32 (at most 3.4e38): below this temperature, a logit of 1e8 / T could overflow.
_SHIFT_BELOW_TEMPERATURE = 1e-20


class SamplePiece(NamedTuple):
    """Text just made for sample `index` (0-based); `finished` is True on its last piece."""

    index: int
    text: str
    finished: bool


# --- the seed phrase ----------------------------------------------------------------------------


def prompt_ids(tokenizer: Tokenizer, prompt: str, unknown: str = "error") -> list[int]:
    """The seed phrase as ids; an empty one starts the model at a line break, as if after a paragraph,
    and a document-mode model always starts after its end marker, at the top of a new document.

    Symbols the model never saw are an error naming them, or are skipped or replaced (`unknown`).
    """
    if unknown == "error":
        unseen = tokenizer.unknown_symbols(prompt)
        if unseen:
            raise TextgenError(
                f"the seed text has symbols the model never saw: {describe_symbols(unseen)} "
                "(--unknown skip or --unknown replace to go on without them)"
            )
        ids = tokenizer.encode(prompt)
    else:
        ids = encode_leniently(tokenizer, prompt, unknown)
    end_id = end_marker(tokenizer)
    if end_id is not None:  # a document begins after the end marker, whatever the seed phrase
        return [end_id, *ids]
    if ids:
        return ids
    if not tokenizer.unknown_symbols("\n"):
        return tokenizer.encode("\n")
    return [0]


def resolve_seed(seed: int | None) -> int:
    """The seed itself, or a fresh one that can be reported so the run can be repeated."""
    return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def sample_stream(seed: int, index: int) -> random.Random:
    """The random numbers of sample `index`: its own stream, the same however many samples there are."""
    return random.Random((seed << 32) | index)


# --- shaping the distribution -------------------------------------------------------------------


def candidates(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens a draw may pick from each row of `logits` (batch, vocab) and their probabilities,
    shaped in the order users expect: temperature, then top-k (0 = off), then top-p (1.0 = off).

    With top-k or top-p on, the candidates are the likeliest first, as (probabilities, token ids),
    each (batch, k); otherwise (probabilities over the whole vocabulary, None). Working on the k
    survivors rather than masking the whole vocabulary keeps a step cheap.
    """
    logits = logits.float()
    ids = None
    if 0 < top_k < logits.shape[-1]:
        logits, ids = torch.topk(logits, top_k, dim=-1)  # exactly k, likeliest first
    elif top_p < 1.0:
        logits, ids = torch.sort(logits, dim=-1, descending=True)
    if temperature < _SHIFT_BELOW_TEMPERATURE:
        # Shift so the largest logit is 0 before scaling: a tiny temperature then gives -inf, not
        # inf - inf. (Softmax shifts anyway; above this temperature no logit can overflow.)
        largest = logits.narrow(-1, 0, 1) if ids is not None else logits.max(dim=-1, keepdim=True).values
        logits = logits - largest
    probabilities = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        # Drop a token when the likelier ones before it already reach top_p; the first always stays.
        # (At top_p 1.0 nothing is computed, so rounding cannot trim the tail.)
        drop = probabilities.cumsum(dim=-1) - probabilities >= top_p
        probabilities = probabilities.masked_fill(drop, 0.0)
        probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
    return probabilities, ids


def next_token_distribution(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0
) -> torch.Tensor:
    """Probabilities over the whole vocabulary (as `candidates` shapes them; 0 for the cut tokens)."""
    batched = logits.reshape(-1, logits.shape[-1])
    probabilities, ids = candidates(batched, temperature, top_k, top_p)
    if ids is not None:
        probabilities = torch.zeros_like(batched, dtype=torch.float32).scatter_(-1, ids, probabilities)
    return probabilities.view(logits.shape)


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: tokens already in the text (`seen`, a bool mask like `logits`)
    have positive logits divided and negative ones multiplied by `penalty`."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def draw(probabilities: torch.Tensor, uniforms: Sequence[float]) -> list[int]:
    """One index per row of `probabilities` by inverting its cumulative distribution at that row's
    number u in [0, 1): each row uses exactly one number, and an entry of probability 0 is never
    drawn (the first entry whose cumulative probability exceeds u * total has a probability above 0).

    The cumulative sums are float64, added left to right, in Python for a few candidates (one
    sample, top-k 40: a third of the tensor calls) and by torch otherwise, with the same result.
    """
    if probabilities.numel() <= _PYTHON_DRAW_MAX_CANDIDATES:
        return [_invert(row, u) for row, u in zip(probabilities.tolist(), uniforms)]
    cumulative = torch.cumsum(probabilities, dim=-1, dtype=torch.float64)
    scaled = torch.tensor([u * _BELOW_ONE for u in uniforms], dtype=torch.float64, device=cumulative.device)
    target = scaled.view(-1, 1) * cumulative[:, -1:]
    indices = torch.searchsorted(cumulative, target, right=True).view(-1)
    return indices.clamp_(max=probabilities.shape[-1] - 1).tolist()  # only a NaN row could reach past the end


def _invert(probabilities: list[float], u: float) -> int:
    cumulative = list(itertools.accumulate(probabilities))
    # u is scaled just below 1 so that u * total, rounded, stays below total.
    return min(bisect.bisect_right(cumulative, u * _BELOW_ONE * cumulative[-1]), len(cumulative) - 1)


def choose_tokens(
    logits: torch.Tensor,
    config: SampleConfig,
    streams: Sequence[random.Random],
    seen: torch.Tensor | None = None,
    banned: int | None = None,
) -> list[int]:
    """The next token of each row of `logits` (batch, vocab), drawing with that row's stream
    (greedy decoding draws nothing). Apple's MPS has no float64 for the draw: there the choice is
    made on the CPU."""
    if logits.device.type == "mps":
        logits, seen = logits.cpu(), None if seen is None else seen.cpu()
    logits = logits.float()
    if seen is not None:
        logits = penalize_repeats(logits, seen, config.repetition_penalty)
    if banned is not None:
        logits = logits.clone() if seen is None else logits
        logits[:, banned] = float("-inf")  # a model should write words, not "<unk>"
    if config.greedy:
        return logits.argmax(dim=-1).tolist()
    probabilities, ids = candidates(logits, config.temperature, config.top_k, config.top_p)
    chosen = draw(probabilities, [stream.random() for stream in streams])
    if ids is None:
        return chosen
    return [row[index] for row, index in zip(ids.tolist(), chosen)]


# --- one token a step ---------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """One recurrent layer in torch's layout: gates stacked along dim 0 (LSTM i, f, g, o; GRU r, z, n)."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
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

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
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
        if torch.backends.mkldnn.is_available():
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
    """One layer's weights arranged for a single step.

    A layer reads the token's embedding (the first layer; every layer with skip connections), the
    layer below's h (every layer but the first), or both, beside its own h. The embedding's share
    of the input projection, embedding @ W^T + biases, becomes a lookup table per token when it is
    small. LSTM rows are reordered to (i, f, o, g) so one sigmoid covers three gates. LSTM and RNN
    layers multiply [rest of the input, h] by [W_ih | W_hh] in one product; GRU keeps the two
    apart, since its reset gate multiplies the hidden part alone.
    """

    def __init__(self, cell: str, weights: LayerWeights, embedding: torch.Tensor | None) -> None:
        hidden = weights.weight_hh.shape[1]
        w_ih, w_hh, b_ih, b_hh = (t.detach() if t is not None else None for t in
                                  (weights.weight_ih, weights.weight_hh, weights.bias_ih, weights.bias_hh))
        if cell == "lstm":
            order = torch.cat([torch.arange(0, 2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                               torch.arange(2 * hidden, 3 * hidden)]).to(w_ih.device)
            w_ih, w_hh = w_ih[order], w_hh[order]
            b_ih, b_hh = (None if b is None else b[order] for b in (b_ih, b_hh))
        self.separate = cell == "gru"
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
            self.input = _Linear(rest, input_bias) if self.reads_rest else None
            self.hidden = _Linear(w_hh, b_hh)
        elif self.reads_rest:
            self.joint = _Linear(torch.cat([rest, w_hh], dim=1), input_bias)
        else:
            self.hidden = _Linear(w_hh, None)

    def _rest(self, tokens: torch.Tensor, below: torch.Tensor | None) -> list[torch.Tensor]:
        """The inputs not covered by the table: the embedding when there is none, and the layer below's h."""
        parts = [] if self.embedding is None else [F.embedding(tokens, self.embedding)]
        return parts if below is None else [*parts, below]

    def gates(self, tokens: torch.Tensor, below: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """LSTM and RNN: the gates' inputs, from the tokens' ids, the layer below's h (or None) and h."""
        if self.reads_rest:
            gates = self.joint(torch.cat([*self._rest(tokens, below), h], dim=1))
        else:
            gates = self.hidden(h)
        return gates if self.table is None else gates.add_(self.table.index_select(0, tokens))

    def gru_parts(self, tokens: torch.Tensor, below: torch.Tensor | None,
                  h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU: the gates' inputs from the layer's inputs and from h, apart."""
        from_input = self.input(torch.cat(self._rest(tokens, below), dim=1)) if self.reads_rest else None
        if self.table is not None:
            looked_up = self.table.index_select(0, tokens)
            from_input = looked_up if from_input is None else from_input.add_(looked_up)
        return from_input, self.hidden(h)


class FastStep:
    """One token for each row of a batch, computed from the model's own weights with no module
    call: the same distribution as model.forward (tests compare the two), several times faster
    than calling nn.LSTM one step at a time.

    The state is a list with one (h, c) or h per layer, each (batch, hidden).
    """

    kind = "fast"

    def __init__(self, model: RNNLanguageModel) -> None:
        self.cell = model.config.cell
        self.hidden = model.config.hidden_size
        embedding = model.embedding.weight.detach()
        self.skip_connections = model.config.skip_connections
        self.layers = [_Layer(self.cell, w, embedding if k == 0 or self.skip_connections else None)
                       for k, w in enumerate(_layer_weights(model))]
        self.decoder = _Linear(model.decoder.weight, model.decoder.bias)
        self.lstm_split = [3 * self.hidden, self.hidden]

    def from_model_state(self, state: State, batch: int) -> list[Any]:
        """The model's (layers, 1, hidden) state after priming, repeated for `batch` rows."""
        if isinstance(state, tuple):
            h, c = (s[:, 0].unsqueeze(1).repeat(1, batch, 1) for s in state)
            return [(h[k].contiguous(), c[k].contiguous()) for k in range(len(self.layers))]
        h = state[:, 0].unsqueeze(1).repeat(1, batch, 1)
        return [h[k].contiguous() for k in range(len(self.layers))]

    def select(self, state: list[Any], rows: torch.Tensor) -> list[Any]:
        return [tuple(s[rows] for s in layer) if isinstance(layer, tuple) else layer[rows] for layer in state]

    def __call__(self, tokens: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """tokens: (batch,) ids -> logits (batch, vocab) for the token after them, and the new state."""
        # Written out per cell, with few tensor calls: at one token a step, each costs about as
        # much as a quarter of the smaller matrix product.
        below: torch.Tensor | None = None
        new_state: list[Any] = []
        H = self.hidden
        if self.cell == "lstm":
            for layer, (h, c) in zip(self.layers, state):
                sigmoid_part, g = layer.gates(tokens, below, h).split_with_sizes(self.lstm_split, dim=1)
                i, f, o = torch.sigmoid(sigmoid_part).chunk(3, dim=1)
                c = torch.addcmul(f * c, i, torch.tanh(g))
                below = o * torch.tanh(c)
                new_state.append((below, c))
        elif self.cell == "gru":
            for layer, h in zip(self.layers, state):
                from_input, from_hidden = layer.gru_parts(tokens, below, h)
                r, z = torch.sigmoid(from_input[:, : 2 * H] + from_hidden[:, : 2 * H]).chunk(2, dim=1)
                n = torch.tanh(torch.addcmul(from_input[:, 2 * H :], r, from_hidden[:, 2 * H :]))
                below = torch.addcmul(n, z, h - n)  # (1 - z) * n + z * h
                new_state.append(below)
        else:
            activation = torch.tanh if self.cell == "rnn-tanh" else torch.relu
            for layer, h in zip(self.layers, state):
                below = activation(layer.gates(tokens, below, h))
                new_state.append(below)
        if self.skip_connections:
            outputs = [layer_state[0] if isinstance(layer_state, tuple) else layer_state for layer_state in new_state]
            return self.decoder(torch.cat(outputs, dim=1)), new_state
        return self.decoder(below), new_state


class ModuleStep:
    """One token a step through model.forward itself (oneDNN off: its RNN kernel costs milliseconds
    per call). The fallback when FastStep does not reproduce the model."""

    kind = "module"

    def __init__(self, model: RNNLanguageModel) -> None:
        self.model = model

    def from_model_state(self, state: State, batch: int) -> State:
        if isinstance(state, tuple):
            return tuple(s.repeat(1, batch, 1) for s in state)  # type: ignore[return-value]
        return state.repeat(1, batch, 1)

    def select(self, state: State, rows: torch.Tensor) -> State:
        return select_state(state, rows)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        with _without_onednn():
            logits, state = self.model(tokens.view(-1, 1), state)
        return logits[:, -1], state


Step = FastStep | ModuleStep


@torch.no_grad()
def make_step(model: RNNLanguageModel) -> Step:
    """The fast step when it reproduces model.forward on a few tokens, else the module step.

    The check costs a few milliseconds and keeps the promise of the model's exact distribution
    even for a model whose structure FastStep does not know."""
    model.eval()
    try:
        fast = FastStep(model)
        ids = torch.arange(3, device=model.decoder.weight.device) % model.config.vocab_size
        with _without_onednn():
            expected, _ = model(ids.view(1, -1))
        logits, state = prime(model, ids[:1].tolist())
        state = fast.from_model_state(state, 1)
        got = [logits]
        for token in ids[1:]:
            logits, state = fast(token.view(1), state)
            got.append(logits)
        scale = max(1.0, float(expected.abs().max()))
        if torch.allclose(torch.cat(got), expected[0], rtol=1e-4, atol=1e-4 * scale):
            return fast
    except (AttributeError, RuntimeError, TypeError, ValueError, IndexError):
        pass  # a model laid out differently: the module step still samples it exactly
    return ModuleStep(model)


def prime(model: RNNLanguageModel, ids: list[int]) -> tuple[torch.Tensor, State]:
    """Read the seed phrase in one pass: the logits (1, vocab) for the next token, and the state."""
    device = model.decoder.weight.device
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


# --- a sample's text ----------------------------------------------------------------------------


class _SampleText:
    """One sample's text as its tokens arrive: decoded, cut at `length` characters and just before
    the first stop text. A tail that could still grow into a stop text is held back until it
    cannot, so nothing printed ever has to be taken back."""

    def __init__(self, tokenizer: Tokenizer, length: int, stops: Sequence[str]) -> None:
        self.decoder = StreamDecoder(tokenizer)
        self.end_id = end_marker(tokenizer)  # a document-mode model ends its sample here
        self.length = length
        self.stops = list(stops)
        self.longest_stop = max(map(len, self.stops), default=0)
        self.pending = ""
        self.emitted = 0
        self.finished = False
        # Decoding may hold text back (a partial UTF-8 sequence); the cap stops a model that only
        # ever emits such tokens from looping forever.
        self.tokens_left = 8 * length + 64

    def feed(self, token: int) -> str:
        self.tokens_left -= 1
        if token == self.end_id:
            return self._add(self.decoder.flush(), last=True)
        text = self._add(self.decoder.feed(token))
        if not self.finished and self.tokens_left <= 0:
            text += self._add(self.decoder.flush(), last=True)
        return text

    def _add(self, piece: str, last: bool = False) -> str:
        room = self.length - self.emitted - len(self.pending)
        if not self.stops and len(piece) < room and not last:
            self.emitted += len(piece)  # the common case, kept cheap: nothing to cut or hold back
            return piece
        piece = piece[:room]
        self.pending += piece
        last = last or len(piece) >= room
        cut = min((i for i in map(self.pending.find, self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.finished = self.pending[:cut], True
        elif last:
            out, self.finished = self.pending, True
        else:
            out = self.pending[: len(self.pending) - self._could_become_a_stop()]
        self.pending = "" if self.finished else self.pending[len(out) :]
        self.emitted += len(out)
        return out

    def _could_become_a_stop(self) -> int:
        """Length of the longest tail of the pending text that begins some stop text."""
        for size in range(min(len(self.pending), self.longest_stop - 1), 0, -1):
            tail = self.pending[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0


# --- the sampler --------------------------------------------------------------------------------


def sample_pieces(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    config: SampleConfig,
    step: Step | None = None,
) -> Iterator[SamplePiece]:
    """Make `config.num_samples` continuations of `prompt` as one batch, yielding each piece of
    text as it is made (pieces of different samples interleave).

    A sample ends at `config.length` characters or just before the first of `config.stop`; its
    last piece has `finished` set. `config.seed` None draws a fresh seed (pass
    `resolve_seed(None)` yourself to know it). `step`: a cached make_step(model), if any.
    """
    check_sample_config(config)
    ids = prompt_ids(tokenizer, prompt, config.unknown)
    seed = resolve_seed(config.seed)
    streams = [sample_stream(seed, index) for index in range(config.num_samples)]
    texts = [_SampleText(tokenizer, config.length, config.stop) for _ in streams]
    rows = list(range(config.num_samples))  # the sample each batch row holds
    batch = _Batch(model, step, config, ids, tokenizer.unk_id, end_marker(tokenizer))
    # Torch runs inside _Batch's methods only, so no grad mode stays switched in the caller's code
    # while this generator waits between pieces.
    tokens = batch.start(streams)
    row_streams = streams
    while True:
        finished = set()
        for row, (sample, token) in enumerate(zip(rows, tokens)):
            text = texts[sample].feed(token)
            if text or texts[sample].finished:
                yield SamplePiece(sample, text, texts[sample].finished)
            if texts[sample].finished:
                finished.add(row)
        if finished:
            keep = [row for row in range(len(rows)) if row not in finished]
            if not keep:
                return
            rows = [rows[row] for row in keep]
            row_streams = [streams[sample] for sample in rows]
            batch.keep(keep)
        tokens = batch.advance(row_streams)


class _Batch:
    """The tensors of a batch of samples: logits, recurrent state, tokens seen (for the penalty).

    After `start`, no tensor here requires grad (FastStep holds detached weights; ModuleStep runs
    under no_grad), so the steps skip a grad-mode switch, which costs as much as a small tensor op.
    """

    def __init__(self, model: RNNLanguageModel, step: Step | None, config: SampleConfig,
                 ids: list[int], banned: int | None, end_id: int | None = None) -> None:
        self.model, self.step, self.config, self.ids, self.banned = model, step, config, ids, banned
        self.end_id = end_id  # never penalised as a repeat: every document needs its end

    @torch.no_grad()
    def start(self, streams: list[random.Random]) -> list[int]:
        """Prime on the seed phrase and draw each sample's first token."""
        model, n = self.model, len(streams)
        model.eval()
        if self.step is None:
            self.step = make_step(model)
        logits, state = prime(model, self.ids)
        self.state = self.step.from_model_state(state, n)
        self.logits = logits.repeat(n, 1)
        self.seen = None
        if self.config.repetition_penalty != 1.0:
            self.seen = torch.zeros(self.logits.shape, dtype=torch.bool, device=self.logits.device)
            self.seen[:, torch.tensor(self.ids, device=self.logits.device)] = True
        return self._choose(streams)

    def _choose(self, streams: list[random.Random]) -> list[int]:
        tokens = choose_tokens(self.logits, self.config, streams, self.seen, self.banned)
        self.tokens = torch.tensor(tokens, device=self.logits.device)
        if self.seen is not None:
            self.seen[torch.arange(len(tokens), device=self.seen.device), self.tokens] = True
            if self.end_id is not None:
                self.seen[:, self.end_id] = False
        return tokens

    def keep(self, rows: list[int]) -> None:
        """Go on with these rows only (the others' samples are finished)."""
        index = torch.tensor(rows, device=self.tokens.device)
        self.tokens = self.tokens[index]
        self.state = self.step.select(self.state, index)
        if self.seen is not None:
            self.seen = self.seen[index]

    def advance(self, streams: list[random.Random]) -> list[int]:
        """Feed each row's last token and draw its next."""
        self.logits, self.state = self.step(self.tokens, self.state)
        return self._choose(streams)


def generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    config: SampleConfig,
    step: Step | None = None,
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece (one sample, whatever config.num_samples)."""
    for piece in sample_pieces(model, tokenizer, prompt, replace(config, num_samples=1), step):
        if piece.text:
            yield piece.text
