"""The server as a library call: serve_app, the ASGI app of `textgen serve` to mount in a server
of your own, and serve, which runs it as the command does. The web framework is imported only
when one of them is called, so `import textgen.serve` for the engine alone loads none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textgen.checkpoint import read_info
from textgen.errors import TextgenError


def serve_app(checkpoints: Mapping[str, str | Path] | Sequence[str | Path], **options: Any) -> Any:
    """The ASGI app of `textgen serve` (FastAPI), to mount in a server of your own:
    `checkpoints` maps model names to checkpoint folders, or lists folders (each named by its
    folder's name); `options` are ServeConfig's fields (api_key, max_batch, max_queue, ...). The
    models load when the app starts; GET /health answers 503 until then."""
    from textgen.config import ServeConfig
    from textgen.serve.app import create_app

    return create_app(named_checkpoints(checkpoints), ServeConfig(**options))


def serve(checkpoints: Mapping[str, str | Path] | Sequence[str | Path], **options: Any) -> None:
    """Serve as `textgen serve` does (which calls this) until SIGTERM or Ctrl-C, then drain and
    return; `checkpoints` and `options` as for serve_app, with host and port among the options."""
    from textgen.config import ServeConfig
    from textgen.serve.running import serve as run_server

    config = ServeConfig(**options)  # every option checked before anything is loaded
    run_server(named_checkpoints(checkpoints), config)


def named_checkpoints(checkpoints: Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, Path]:
    """Model names to checkpoint folders, each folder checked to hold a checkpoint."""
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    pairs = list(checkpoints.items()) if isinstance(checkpoints, Mapping) else \
        [(Path(path).resolve().name, path) for path in checkpoints]
    if not pairs:
        raise TextgenError("nothing to serve: give at least one checkpoint")
    named: dict[str, Path] = {}
    for name, path in pairs:
        if name in named:
            raise TextgenError(f"two checkpoints are named {name!r}: give them names of their own (name=path)")
        read_info(Path(path))  # a folder that is not a checkpoint fails now, in one line
        named[name] = Path(path)
    return named
