"""Several models scored on the same text, a row each. Perplexities of a char model and of a word
model are per different tokens and cannot be compared; bits per character (or per UTF-8 byte)
divide the same total by the same text, so they can."""

from __future__ import annotations

from typing import Any

from textgen.evaluation import evaluate_text
from textgen.reports import ModelRow


def compare(models: list[tuple[str, Any]], text: str, unknown: str = "error", label: str = "the text") -> list[ModelRow]:
    """A row per (name, TextModel), best first by bits per character."""
    bytes_per_char = len(text.encode("utf-8")) / len(text) if text else 1.0
    rows = []
    for name, model in models:
        result = evaluate_text(model.model, model.tokenizer, text, "", unknown, label=label)
        config = model.model.config
        rows.append(ModelRow(
            name=name, cell=config.cell, layers=config.layers, hidden_size=config.hidden_size,
            parameters=model.model.num_parameters(), tokenizer=model.tokenizer.kind,
            vocab_size=model.tokenizer.vocab_size, tokens=result.tokens, nats_per_token=result.loss,
            perplexity=result.perplexity, bits_per_char=result.bits_per_char,
            bits_per_byte=result.bits_per_char / bytes_per_char, unseen=result.unseen,
            unseen_handling=result.unseen_handling or "none",
        ))
    return sorted(rows, key=lambda row: row.bits_per_char)
