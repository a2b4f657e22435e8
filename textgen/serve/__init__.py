"""textgen serve: completions over HTTP in OpenAI's shapes. engine.py batches every live request
on one thread, cache.py keeps recurrent states by prompt prefix, metrics.py measures both sides; app.py speaks HTTP, and launch.py hands out the app (serve_app)
or runs it (serve)."""

from textgen.serve.engine import Busy, Engine, Event, Finish, Generation, Job, Piece, TokenInfo, UnknownModel
from textgen.serve.launch import named_checkpoints, serve, serve_app
from textgen.serve.metrics import ServeMetrics

__all__ = ["Busy", "Engine", "Event", "Finish", "Generation", "Job", "Piece", "ServeMetrics", "TokenInfo",
           "UnknownModel", "named_checkpoints", "serve", "serve_app"]
