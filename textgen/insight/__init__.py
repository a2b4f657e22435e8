"""What a model has learnt, as plain data for the CLI and the Python API to show: compare.py
(several models on one text), memory.py (how far back a model uses its context), gradients.py
(how the gradient fades with distance), cells.py (units that track the text, gate saturation),
surprise.py (how surprised it is by each token of a text).
Nothing here prints."""

from textgen.insight.cells import CellMatch, CellReport, cell_report, text_features
from textgen.insight.compare import ModelRow, compare
from textgen.insight.gradients import GradientFade, gradient_fade
from textgen.insight.memory import MemoryPoint, memory_reach
from textgen.insight.surprise import TokenSurprise, surprisal

__all__ = [
    "CellMatch", "CellReport", "GradientFade", "MemoryPoint", "ModelRow", "TokenSurprise", "cell_report", "compare",
    "gradient_fade", "memory_reach", "surprisal", "text_features",
]
