"""textgen serve: completions over HTTP in OpenAI's shapes. engine.py batches every live request
on one thread, cache.py keeps recurrent states by prompt prefix, metrics.py measures both sides."""

from textgen.serve.engine import Busy, Engine, Event, Finish, Generation, Job, Piece, TokenInfo, UnknownModel
from textgen.serve.metrics import ServeMetrics

__all__ = ["Busy", "Engine", "Event", "Finish", "Generation", "Job", "Piece", "ServeMetrics", "TokenInfo",
           "UnknownModel"]
