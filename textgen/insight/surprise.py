"""Surprise: how many bits each token of a text costs the model, read in one pass with the state
carried, beside the probability it gave the token and the tokens it preferred."""

from __future__ import annotations

import math

import torch

from textgen.evaluation import evaluation_mode
from textgen.model import RNNLanguageModel
from textgen.reports import TokenSurprise
from textgen.tokenizers import Tokenizer


def surprisal(model: RNNLanguageModel, tokenizer: Tokenizer, ids: list[int], top: int = 5,
              chunk: int = 4096) -> list[TokenSurprise]:
    """One entry per token of ids[1:] (the first has nothing before it to be predicted from), with
    the `top` likeliest tokens at each (0: none, which is much faster on a long text)."""
    result: list[TokenSurprise] = []
    state = None
    with evaluation_mode(model):
        for start in range(0, len(ids) - 1, chunk):
            inputs = torch.tensor([ids[start : start + chunk]], device=model.device)
            targets = ids[start + 1 : start + chunk + 1]
            logits, state = model(inputs[:, : len(targets)], state)
            log_probabilities = torch.log_softmax(logits[0].float(), dim=-1).cpu()
            chosen = log_probabilities.gather(1, torch.tensor(targets).view(-1, 1))[:, 0].tolist()
            best = torch.topk(log_probabilities, min(top, log_probabilities.shape[-1]), dim=-1) if top else None
            for position, (target, log_p) in enumerate(zip(targets, chosen)):
                preferred = [] if best is None else [
                    (tokenizer.token_text(int(i)), math.exp(float(v)))
                    for v, i in zip(best.values[position], best.indices[position])]
                result.append(TokenSurprise(tokenizer.token_text(target), -log_p / math.log(2), math.exp(log_p),
                                            preferred))
    return result
