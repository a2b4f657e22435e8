"""The `textgen` command line: app.py (the commands and how errors end them), one module per
command (train, sample, evaluate, info), interactive.py (the prompt loop of `sample -i`).

`main` is kept here, light, so that a Ctrl-C or SIGTERM that lands while the commands are still
being imported ends the program the same way as one during a run: "error: interrupted", exit 130.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    """The console script: run the CLI, every anticipated failure as one line and a non-zero exit."""
    previous = signal.getsignal(signal.SIGTERM)
    took_sigterm = False
    code: int | str | None = 0
    try:
        # SIGTERM (a `kill`, a closing terminal, a job scheduler) stops textgen like Ctrl-C: a
        # run saves where it stands, and anything else ends at once without a traceback.
        if previous in (signal.SIG_DFL, None):
            try:
                signal.signal(signal.SIGTERM, _interrupt)
                took_sigterm = True
            except ValueError:  # not the main thread (main() called from a program's own thread)
                pass
        from textgen.cli.app import run

        run(argv)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    except SystemExit as done:
        code = done.code
    finally:
        if took_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, leave without the interpreter's teardown: the collective library's C++
        # threads can abort the process there (SIGABRT) after all the work is done and saved.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    if code == 130 and argv is None:
        # The program's own exit after an interruption. One that landed while torch was importing
        # makes CPython end the process by SIGINT even once it was handled, which a parent process
        # sees as -2, not 130; so leave directly. Every `finally` (locks, temporary files) has run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def __getattr__(name: str) -> object:
    if name == "app":  # the Typer application, for tools that want it; importing it loads typer
        from textgen.cli.app import app

        return app
    raise AttributeError(f"module 'textgen.cli' has no attribute {name!r}")
