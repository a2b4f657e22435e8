"""What a model has learnt, as plain data for the CLI and the Python API to show: compare.py
(several models on one text), memory.py (how far back a model uses its context), gradients.py
(how the gradient fades with distance), surprise.py (how surprised it is by each token of a text).
Nothing here prints."""

from textgen.insight.compare import ModelRow, compare
from textgen.insight.gradients import GradientFade, gradient_fade
from textgen.insight.memory import MemoryPoint, memory_reach
from textgen.insight.surprise import TokenSurprise, surprisal

__all__ = [
    "GradientFade", "MemoryPoint", "ModelRow", "TokenSurprise", "compare", "gradient_fade", "memory_reach", "surprisal",
]
