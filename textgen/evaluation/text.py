"""Scoring a model on a text: loss in nats per token, perplexity, and bits per character, with
the symbols the model never saw refused, skipped or replaced as asked.

Bits per character divides the same total loss by the number of characters scored,
which is what makes a char model and a word or subword model comparable.
"""

from __future__ import annotations

import math

import torch

from textgen.evaluation.scoring import documents_loss, total_loss
from textgen.model import RNNLanguageModel
from textgen.reports import EvaluationResult


def summarise(total_nats: float, tokens: int, characters: int) -> EvaluationResult:
    loss = total_nats / tokens if tokens else float("nan")
    return EvaluationResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)) if tokens else float("nan"),
        bits_per_char=total_nats / math.log(2) / characters if characters else float("nan"),
        tokens=tokens,
        characters=characters,
    )


def evaluate_text(
    model: RNNLanguageModel, tokenizer, text: str, context: str = "", unknown: str = "error",
    label: str = "the text",
) -> EvaluationResult:
    """Score `text`. With `context` (the text just before it), the last token of the context
    primes the model so every token of `text` is scored; without, the first token is not.
    A document-mode model scores each document of `text` on its own, end marker included.

    Symbols the model never saw: `unknown` "error" refuses a text a char model cannot read,
    "skip" leaves them out of the score, "replace" stands in for them (char: a plain form it
    knows; word: <unk>). A word model scores unseen words as <unk> unless told to skip them.
    `label` names the text in that refusal."""
    from textgen.config import UNKNOWN_POLICIES, OptionError, SettingError
    from textgen.tokenizers import encode_leniently, end_marker, unseen_symbols

    if unknown not in UNKNOWN_POLICIES:
        raise OptionError("unknown", f"must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
    unseen = unseen_symbols(tokenizer, text)
    handling = ""
    characters = len(text)
    encode = tokenizer.encode
    if unseen.occurrences:
        if unknown == "error" and tokenizer.unk_id is None:
            raise SettingError(f"{label} has {unseen.describe(len(text))}; "
                               "{unknown} skip or {unknown} replace scores it without them", "unknown")
        if unknown == "error" or tokenizer.unk_id is not None and unknown == "replace":
            handling = "<unk>"
        else:
            handling = "skipped" if unknown == "skip" else "replaced"
            encode = lambda piece: encode_leniently(tokenizer, piece, unknown)  # noqa: E731
            if tokenizer.unk_id is None:  # char: what is scored is the text as the model reads it
                characters = len(tokenizer.decode(encode(text)))
            elif unknown == "skip":
                characters -= unseen.characters

    end_id = end_marker(tokenizer)
    if end_id is not None:
        from textgen.data import split_documents

        documents = [encode(d) for d in split_documents(text, tokenizer.mode)]
        total, count = documents_loss(model, documents, end_id)
        return _with_unseen(summarise(total, count, characters), unseen.occurrences, handling)
    ids = encode(text)
    if not ids:
        return summarise(0.0, 0, 0)
    context_id = None
    if context:
        context_ids = tokenizer.encode(context[-1000:])
        context_id = context_ids[-1] if context_ids else None
    total, count = total_loss(model, torch.tensor(ids), context_id)
    if context_id is None:
        characters -= len(tokenizer.decode(ids[:1]))
    return _with_unseen(summarise(total, count, characters), unseen.occurrences, handling)


def _with_unseen(result: EvaluationResult, unseen: int, handling: str) -> EvaluationResult:
    result.unseen, result.unseen_handling = (unseen, handling) if handling else (0, "")
    return result
