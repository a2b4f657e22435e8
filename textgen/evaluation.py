"""Scoring a model on text: loss in nats per token, perplexity, and bits per character.

Bits per character divides the same total loss by the number of characters scored,
which is what makes a char model and a word or subword model comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from textgen.documents import IGNORE, lay_out, window_for
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel, reset_rows


@dataclass
class EvaluationResult:
    loss: float  # mean nats per scored token
    perplexity: float
    bits_per_char: float
    tokens: int  # tokens scored
    characters: int  # characters those tokens spell
    # Occurrences of symbols the model never saw, and what was done with them: "skipped" (left out
    # of the score), "replaced" (by a stand-in the model knows), "<unk>" (scored as a word model's
    # unknown token) or "" when there were none. Reported so a figure is never silently flattered.
    unseen: int = 0
    unseen_handling: str = ""

    def to_json(self) -> dict[str, float | int | str]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "tokens": self.tokens,
            "characters": self.characters,
            "unseen_symbols": self.unseen,
            "unseen_handling": self.unseen_handling or "none",
        }


def total_loss(
    model: RNNLanguageModel,
    ids: torch.Tensor,
    context_id: int | None = None,
    rows: int = 32,
    window: int = 256,
) -> tuple[float, int]:
    """Sum of next-token losses in nats over every token of `ids` after the first
    (over every token when `context_id` supplies the one before it), and how many were scored.

    The ids are cut into `rows` contiguous segments run side by side, each carrying its
    state through windows of `window` tokens; padding at the end is masked out:

        ids  a b c d e f g h i j k        10 predictions, rows=3, segment length 4
        row0 a b c d  -> predicts b c d e
        row1 e f g h  -> predicts f g h i
        row2 i j . .  -> predicts j k (the padding is ignored)
    """
    ids = ids.to(torch.long).flatten()
    if context_id is not None:
        ids = torch.cat([torch.tensor([context_id], dtype=torch.long), ids])
    count = ids.numel() - 1
    if count < 1:
        return 0.0, 0
    rows = max(1, min(rows, count))
    length = math.ceil(count / rows)
    padded = rows * length
    inputs = torch.zeros(padded, dtype=torch.long)
    targets = torch.full((padded,), IGNORE, dtype=torch.long)
    inputs[:count] = ids[:-1]
    targets[:count] = ids[1:]
    device = model.decoder.weight.device
    inputs = inputs.view(rows, length).to(device)
    targets = targets.view(rows, length).to(device)

    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        with torch.inference_mode():
            state = model.init_state(rows, device)
            for start in range(0, length, window):
                logits, state = model(inputs[:, start : start + window], state)
                total += F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    targets[:, start : start + window].reshape(-1),
                    ignore_index=IGNORE,
                    reduction="sum",
                ).double()
    finally:
        model.train(was_training)
    return float(total), count


def documents_loss(
    model: RNNLanguageModel, documents: list[list[int]], end_id: int, rows: int = 32, window: int = 256
) -> tuple[float, int]:
    """Sum of next-token losses over documents, each read from a fresh state: every token and the
    end marker after the last one are predicted, the opening marker is given."""
    if not documents:
        return 0.0, 0
    layout = lay_out(documents, end_id, rows, window_for(documents, window))
    device = model.decoder.weight.device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        with torch.inference_mode():
            state = model.init_state(layout.inputs.shape[1], device)
            for index in range(layout.windows):
                state = reset_rows(state, layout.starts[index].to(device))
                logits, state = model(layout.inputs[index].to(device), state)
                total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                         layout.targets[index].to(device).reshape(-1),
                                         ignore_index=IGNORE, reduction="sum").double()
    finally:
        model.train(was_training)
    return float(total), int((layout.targets != IGNORE).sum())


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
    from textgen.config import UNKNOWN_POLICIES
    from textgen.tokenizers import encode_leniently, end_marker, unseen_symbols

    if unknown not in UNKNOWN_POLICIES:
        raise TextgenError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
    unseen = unseen_symbols(tokenizer, text)
    handling = ""
    characters = len(text)
    encode = tokenizer.encode
    if unseen.occurrences:
        if unknown == "error" and tokenizer.unk_id is None:
            raise TextgenError(f"{label} has {unseen.describe(len(text))}; "
                               "--unknown skip or --unknown replace scores it without them")
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
        from textgen.documents import split_documents

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
