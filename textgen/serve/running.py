"""Running the app as a server process: uvicorn on the host and port, SIGTERM and Ctrl-C drained
(new work refused with 503, running streams given up to drain_timeout seconds, the rest ended with
a final chunk, exit 0), and --workers as uvicorn's worker processes."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from textgen.config import ServeConfig
from textgen.errors import TextgenError
from textgen.serve.app import ServerState, create_app

# Worker processes are started by uvicorn from an import string, so what to serve reaches them here.
SETTINGS_VARIABLE = "TEXTGEN_SERVE_SETTINGS"


def serve(checkpoints: Mapping[str, Path], config: ServeConfig) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain and return."""
    check_port_free(config.host, config.port)
    common = dict(host=config.host, port=config.port, log_level="warning", access_log=False,
                  timeout_graceful_shutdown=config.drain_timeout + 5)
    if config.workers > 1:
        # Each worker is a process of its own with its own engine and state cache; uvicorn's
        # graceful shutdown drains each one (a load balancer should route a conversation stickily).
        os.environ[SETTINGS_VARIABLE] = json.dumps({"checkpoints": {k: str(v) for k, v in checkpoints.items()},
                                                    "config": asdict(config)})
        uvicorn.run("textgen.serve.running:app_from_environment", factory=True, workers=config.workers, **common)
        return
    app = create_app(checkpoints, config)
    DrainingServer(uvicorn.Config(app, **common), app.state.textgen).run()


def app_from_environment() -> Any:
    """The app a worker process serves, from the settings its parent left in the environment."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    return create_app({name: Path(path) for name, path in settings["checkpoints"].items()},
                      ServeConfig(**settings["config"]))


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM or Ctrl-C drains the engine before it stops; a second
    one stops at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's own: it would raise the signal again once stopped, and the process would
        # end by it rather than with exit code 0.
        if self.state.draining:
            self.force_exit = self.should_exit = True
            return
        self.state.draining = True
        threading.Thread(target=self._drain_then_stop, name="textgen-drain", daemon=True).start()

    def _drain_then_stop(self) -> None:
        if self.state.engine is not None:
            self.state.engine.drain(self.state.config.drain_timeout)
        self.should_exit = True


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise TextgenError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
