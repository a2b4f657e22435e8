"""Measuring a model: scoring.py is the one windowed cross-entropy, text.py turns it into loss,
perplexity and bits per character for a text."""

from textgen.evaluation.scoring import (
    documents_loss, evaluation_mode, held_out_loss, random_windows_loss, score_windows, segments_loss, total_loss,
)
from textgen.evaluation.text import EvaluationResult, evaluate_text, summarise

__all__ = [
    "EvaluationResult", "documents_loss", "evaluate_text", "evaluation_mode", "held_out_loss", "random_windows_loss",
    "score_windows", "segments_loss", "summarise", "total_loss",
]
