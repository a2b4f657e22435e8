"""Starting a run from a trained model: the base checkpoint as read for fine-tuning, and its weights
carried into a model whose vocabulary has grown. Rows of tokens the base knew are copied to their
ids; a new token's embedding is the mean of the base's, and its output row the mean of the base's
less NEW_TOKEN_LOGIT_OFFSET, so the grown model gives the base's own text the loss the base did."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from textgen.checkpoint import CheckpointInfo
from textgen.checkpoint.records import LineageRecord
from textgen.config import NEW_TOKEN_LOGIT_OFFSET, BaseSettings
from textgen.model import RNNLanguageModel
from textgen.tokenizers import Tokenizer, describe_symbols, origins

# The parameters with one row per token; every other one has the same shape in base and run.
_TOKEN_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")


@dataclass
class Base:
    """A trained checkpoint a run starts from: its records, its best weights and its tokenizer."""

    path: Path
    info: CheckpointInfo
    model: RNNLanguageModel
    tokenizer: Tokenizer
    weights_sha256: str
    notes: tuple[str, ...] = ()  # for the run's plan line: how its settings were settled from this base

    @property
    def settings(self) -> BaseSettings:
        return BaseSettings(self.info.model, self.info.tokenizer, self.info.training.config)

    def lineage(self) -> LineageRecord:
        """What the run records of where it started: this base, and the base's own lineage."""
        return LineageRecord(path=str(self.path.resolve()), weights_sha256=self.weights_sha256,
                             corpus=self.info.corpus.source, steps=self.info.training.steps, base=self.info.base)


@torch.no_grad()
def start_from(model: RNNLanguageModel, base: Base, tokenizer: Tokenizer) -> str:
    """Fill `model` (built for `tokenizer`, the base's vocabulary grown) with the base's weights;
    what was done, for the run's plan line."""
    weights = base.model.state_dict()
    model.load_state_dict({k: v for k, v in weights.items() if k not in _TOKEN_ROWS}, strict=False)
    sources = origins(base.tokenizer, tokenizer)
    embedding, decoder = weights["embedding.weight"], weights["decoder.weight"]
    model.embedding.weight.copy_(_rows(embedding, sources, embedding.mean(dim=0)))
    # With n-gram counts the output layer's last row is the gate's, after the tokens' rows.
    gate = 1 if model.config.ngram_order else 0
    tokens, bias = decoder[: len(decoder) - gate], weights["decoder.bias"]
    model.decoder.weight.copy_(torch.cat([_rows(tokens, sources, tokens.mean(dim=0)), decoder[len(tokens):]]))
    token_bias = bias[: len(tokens)]
    model.decoder.bias.copy_(torch.cat([_rows(token_bias, sources, token_bias.mean() - NEW_TOKEN_LOGIT_OFFSET),
                                        bias[len(tokens):]]))
    new = [tokenizer.token_text(i) for i, source in enumerate(sources) if source is None]
    grown = f"; {len(new):,} new tokens: {describe_symbols(new)}" if new else "; no new tokens"
    return f"starting from {base.path} (its best weights, after {base.info.training.steps:,} steps){grown}"


def _rows(base_rows: torch.Tensor, sources: list[int | None], fill: torch.Tensor) -> torch.Tensor:
    """One row per id: the base's row for the id it had there, `fill` for a new one."""
    taken = base_rows[torch.tensor([0 if source is None else source for source in sources])].clone()
    taken[torch.tensor([source is None for source in sources])] = fill.to(taken.dtype)
    return taken
