"""RNNLanguageModel: token ids in, next-token logits out, with the recurrent state carried by the caller.

The model knows nothing of text or files: Embedding -> stack of LSTM/GRU/RNN layers -> Linear.
With an n-gram companion (config.ngram_order) the output layer also gives a gate, and the
prediction is the mix  g * softmax(network) + (1 - g) * counts  (textgen/model/ngram.py),
returned as its logarithm, so every reader of logits takes it unchanged; the state then also
carries the last ngram_order - 1 tokens read.
With skip connections (the default) the embedding also feeds every layer above the first and
the output layer reads every layer, as in Graves (2013), "Generating sequences with recurrent
neural networks": each layer gets a short path to the input and to the loss, which is what lets
a model learn fast in the first CPU minutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textgen.config import ModelConfig
from textgen.errors import TextgenError
from textgen.model.cells import cell_kind
from textgen.model.ngram import NGramCounts
from textgen.model.state import State, join_layers, layer_state, state_from_parts, state_parts


class RNNLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.cell_kind = cell_kind(config.cell)
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.input_dropout = LockedDropout(config.dropout)
        hidden, embedding = config.hidden_size, config.embedding_size
        if config.skip_connections:
            # One module per layer: each reads the embedding beside the layer below.
            self.layers = nn.ModuleList(
                self.cell_kind.build(input_size=embedding + (hidden if k else 0), hidden_size=hidden,
                                     batch_first=True)
                for k in range(config.layers)
            )
            self.between_dropout = LockedDropout(config.dropout)
            decoder_input = hidden * config.layers
        else:
            self.rnn = self.cell_kind.build(
                input_size=embedding,
                hidden_size=hidden,
                num_layers=config.layers,
                dropout=config.dropout if config.layers > 1 else 0.0,
                batch_first=True,
            )
            decoder_input = hidden
        self.output_dropout = LockedDropout(config.dropout)
        # With counts to mix in, one more output: the gate's logit.
        self.decoder = nn.Linear(decoder_input, config.vocab_size + (1 if config.ngram_order else 0))
        self.ngram: NGramCounts | None = None  # attached once counted (training) or read (loading)
        if config.tie_weights:
            # Sharing the input and output matrices saves parameters and helps word models generalise.
            self.decoder.weight = self.embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.zeros_(self.decoder.bias)
        if self.config.tie_weights:
            # Shared with the output layer, where unit-variance rows would give huge first logits.
            nn.init.normal_(self.embedding.weight, std=0.1)
        else:
            # Unit-variance inputs (torch's default) drive the gates hard from the start: in 80 s
            # on tiny Shakespeare this reached 1.57 nats/char where std 0.1 reached 1.66-1.83.
            nn.init.normal_(self.embedding.weight, std=1.0)
            nn.init.normal_(self.decoder.weight, std=self.decoder.in_features**-0.5)
        for weights in self.layer_weights():
            self.cell_kind.init_weights(weights, self.config.hidden_size)

    def layer_weights(self) -> list[dict[str, torch.Tensor]]:
        """Each layer's weight_ih, weight_hh, bias_ih and bias_hh in torch's layout (gates stacked
        along dim 0). With skip connections, weight_ih of a layer above the first reads
        [embedding, layer below]."""
        if self.config.skip_connections:
            sources = [(layer, 0) for layer in self.layers]
        else:
            sources = [(self.rnn, k) for k in range(self.config.layers)]
        return [
            {part: getattr(module, f"{part}_l{k}", None) for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            for module, k in sources
        ]

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero state that starts a stream."""
        device = device or self.decoder.weight.device
        shape = (self.config.layers, batch_size, self.config.hidden_size)
        parts = [torch.zeros(shape, device=device) for _ in self.cell_kind.state_parts]
        if self.config.ngram_order:  # the tokens read, as id + 1 (0: none yet)
            parts.append(torch.zeros(1, batch_size, self.config.ngram_order - 1, device=device))
        return state_from_parts(parts)

    @property
    def state_part_count(self) -> int:
        """How many tensors the state holds: the cell's parts, and the tokens read for the counts."""
        return len(self.cell_kind.state_parts) + (1 if self.config.ngram_order else 0)

    def attach_counts(self, counts: NGramCounts) -> None:
        """The n-gram counts to mix in (counted from the training text, or read with the weights)."""
        if counts.order != self.config.ngram_order or counts.vocab_size != self.config.vocab_size:
            raise TextgenError(f"n-gram counts of order {counts.order} over {counts.vocab_size} tokens do not fit "
                               f"a model of order {self.config.ngram_order} over {self.config.vocab_size}")
        self.ngram = counts.to(self.device)

    def tables_to_read(self) -> list[str]:
        """The weights file's tensors this model needs before its weights load: its n-gram counts'
        tables, whose sizes only the file knows."""
        if not self.config.ngram_order or self.ngram is not None:
            return []
        return [f"ngram.{name}" for name in NGramCounts.table_names(self.config.ngram_order)]

    def attach_tables(self, tables: dict[str, torch.Tensor]) -> None:
        """Counts from the tables `tables_to_read` named."""
        tables = {name.removeprefix("ngram."): value for name, value in tables.items()}
        self.attach_counts(NGramCounts(self.config.vocab_size, self.config.ngram_order, tables))

    def forward(self, ids: torch.Tensor, state: State | None = None, *, with_top_output: bool = False,
                counted_targets: torch.Tensor | None = None, with_network_logits: bool = False,
                ) -> tuple[torch.Tensor, ...]:
        """ids: (batch, time) int64 -> logits (batch, time, vocab) and the state after the last step.
        With `with_top_output`, also the top layer's output (batch, time, hidden) before dropout,
        which the training loss may penalise (TrainConfig.activation_penalty).

        With n-gram counts: `counted_targets` are the ids that follow, where this text is the one
        counted (training on it), so that each prediction sees the counts without its own
        occurrence; `with_network_logits` also returns, last, the network's own logits before the
        mix, which training scores too (see mix_counts)."""
        if state is None:
            state = self.init_state(ids.shape[0], ids.device)
        history = None
        if self.config.ngram_order:
            *cells, history = state_parts(state)
            state = state_from_parts(cells)
        x = self.input_dropout(self._embed(ids))
        if not self.config.skip_connections:
            top, state = self._run(self.rnn, x, state)
            logits = self.decoder(self.output_dropout(top))
        else:
            outputs, states, below = [], [], x
            for k, layer in enumerate(self.layers):
                output, state_after = self._run(layer, below, layer_state(state, k))
                outputs.append(output)
                states.append(state_after)
                if k + 1 < len(self.layers):  # the input of the layer above (none above the top one)
                    below = torch.cat([x, self.between_dropout(output)], dim=-1)
            logits = self.decoder(self.output_dropout(torch.cat(outputs, dim=-1)))
            state, top = join_layers(states), outputs[-1]
        extras = (top,) if with_top_output else ()
        if history is not None:
            network = logits[..., : self.config.vocab_size]
            logits, history = self.mix_counts(logits, ids, history, counted_targets)
            state = state_from_parts([*state_parts(state), history])
            extras += (network,) if with_network_logits else ()
        return (logits, state, *extras)

    def mix_counts(self, outputs: torch.Tensor, ids: torch.Tensor, history: torch.Tensor,
                   counted_targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's (batch, time, vocab + 1) for `ids` (batch, time) read after the tokens
        in `history` (1, batch, order - 1) -> the mix's log-probabilities (batch, time, vocab),
        float32, and the history after `ids`.

        With `counted_targets` (training on the counted text) the counts are read for the targets
        alone, each without its own occurrence, and the result has one more column: the log of
        the mass the counts give the other tokens, which no target is. Cross-entropy over it is
        then exactly the mix's, at the cost of one lookup per prediction, not one per symbol.

        Training scores the mix and, beside it, the network's own prediction: in a mix each part
        learns in proportion to the share of the next token it already gave, so a new network,
        worse than the counts at first, would learn slowly from the mix alone (80 s on one core:
        1.523 nats/char from the mix alone, 1.463 with the network's own loss added)."""
        if self.ngram is None:
            raise TextgenError("this model mixes in n-gram counts, and none were counted or loaded")
        rows, time, vocab = ids.shape[0], ids.shape[1], self.config.vocab_size
        context = self.config.ngram_order - 1
        read = torch.cat([history[0].to(torch.long) - 1, ids], dim=1)  # -1: nothing read yet
        contexts = read.unfold(1, context, 1)[:, 1:].reshape(-1, context)  # the tokens up to each of ids
        after = (read[:, -context:] + 1).to(history.dtype).unsqueeze(0)
        outputs = outputs.float()
        trust, distrust = F.logsigmoid(outputs[..., vocab:]), F.logsigmoid(-outputs[..., vocab:])
        network = F.log_softmax(outputs[..., :vocab], dim=-1)
        if counted_targets is None:
            counts = self.ngram.distribution(contexts).view(rows, time, vocab)
            return torch.logaddexp(trust + network, distrust + counts.clamp(min=1e-30).log()), after
        targets = counted_targets.clamp(min=0)  # ignored places (documents' padding) score nothing
        held_out = self.ngram.held_out_probability(contexts, targets.reshape(-1)).view(rows, time, 1)
        mixed = trust + network
        at_target = torch.logaddexp(mixed.gather(2, targets[..., None]), distrust + held_out.clamp(min=1e-30).log())
        rest = distrust + (1 - held_out).clamp(min=1e-30).log()
        return torch.cat([mixed.scatter(2, targets[..., None], at_target), rest], dim=-1), after

    @staticmethod
    def shifted_history(history: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The counts' history (batch, order - 1) after reading tokens (batch,): held as id + 1,
        so that 0 says no token yet."""
        return torch.cat([history[:, 1:], (tokens + 1).to(history.dtype)[:, None]], dim=1)

    def mix_step(self, outputs: torch.Tensor, tokens: torch.Tensor,
                 history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mix_counts for one token a row, as the fast step reads: outputs (batch, vocab + 1),
        tokens (batch,) and history (batch, order - 1) -> log-probabilities (batch, vocab) and the
        history after tokens; in as few tensor operations as it takes, which at one row cost
        more than the arithmetic."""
        history = self.shifted_history(history, tokens)
        counts = self.ngram.distribution(history.to(torch.long) - 1)
        outputs = outputs.float()
        trust = torch.sigmoid(outputs[:, self.config.vocab_size :])
        mixed = torch.softmax(outputs[:, : self.config.vocab_size], dim=-1).mul_(trust).add_(counts.mul_(1 - trust))
        return mixed.log_(), history

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        p = self.config.embedding_dropout
        if not self.training or p == 0.0:
            return self.embedding(ids)
        # Whole token types vanish for this batch, wherever they occur: the model cannot lean on one symbol.
        weight = self.embedding.weight
        keep = torch.empty(weight.shape[0], 1, device=weight.device, dtype=weight.dtype).bernoulli_(1.0 - p)
        return F.embedding(ids, weight * keep / (1.0 - p))

    def _run(self, module: nn.Module, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        p = self.config.weight_drop
        if not self.training or p == 0.0:
            return module(x, state)
        # DropConnect on the recurrent matrices, the same links lost at every step of the window: the
        # state's path through time is regularised without touching the fused kernels' inner loop.
        dropped = {name: F.dropout(weight, p) for name, weight in module.named_parameters()
                   if name.startswith("weight_hh")}
        return torch.func.functional_call(module, dropped, (x, state))

    @property
    def device(self) -> torch.device:
        """Where the weights are: the one place that knows a model's device."""
        return self.decoder.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every time step (Gal & Ghahramani's
    variational dropout): the network cannot route around noise that changes at every step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, time, features)
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.shape[0], 1, x.shape[2], device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * mask / keep
