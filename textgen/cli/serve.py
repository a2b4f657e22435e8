"""`textgen serve`: one or more checkpoints behind OpenAI's completions API, many users at once,
with a page to play in at its address."""

# Annotations are evaluated as the module loads, not postponed: Typer would otherwise compile and
# evaluate each option's annotation string again every time it starts, --help included.

from pathlib import Path
from typing import Annotated, Optional

import typer

from textgen.config import ServeConfig
from textgen.errors import TextgenError

_serve = ServeConfig()
LIMITS, LIFECYCLE = "Limits", "Lifecycle"


def serve(
    checkpoints: Annotated[list[str], typer.Argument(
        help="Checkpoint folders, each a model named by its folder, or NAME=PATH to name it.", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on; another than loopback needs --api-key "
                                           "(or --insecure).")] = _serve.host,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = _serve.port,
    api_key: Annotated[Optional[str], typer.Option(envvar="TEXTGEN_API_KEY", show_default=False,
                                                   help="Clients must send Authorization: Bearer KEY.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve a non-loopback address without a key.")] = _serve.insecure,
    max_batch: Annotated[int, typer.Option(help="Rows stepped together (0 = from the machine: "
                                                f"{ServeConfig().max_batch} here).", rich_help_panel=LIMITS)] = 0,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a row; past it, 503 with Retry-After.",
                                           rich_help_panel=LIMITS)] = _serve.max_queue,
    max_tokens_limit: Annotated[int, typer.Option(help="The largest max_tokens a request may ask for.",
                                                  rich_help_panel=LIMITS)] = _serve.max_tokens_limit,
    max_prompt: Annotated[int, typer.Option(help="Characters in a prompt (a chat's messages laid out).",
                                            rich_help_panel=LIMITS)] = _serve.max_prompt,
    max_body: Annotated[int, typer.Option(help="Bytes in a request body; 413 past it.",
                                          rich_help_panel=LIMITS)] = _serve.max_body,
    state_cache_mb: Annotated[float, typer.Option(help="Memory for the states of recent prompts (0 = off).",
                                                  rich_help_panel=LIMITS)] = _serve.state_cache_mb,
    drain_timeout: Annotated[float, typer.Option(help="Seconds running streams may go on after SIGTERM or Ctrl-C.",
                                                 rich_help_panel=LIFECYCLE)] = _serve.drain_timeout,
    reload: Annotated[bool, typer.Option("--reload", help="Swap in new weights when a run saves a new best.",
                                         rich_help_panel=LIFECYCLE)] = _serve.reload,
    workers: Annotated[int, typer.Option(help="Server processes (each with its own engine and state cache).",
                                         rich_help_panel=LIFECYCLE)] = _serve.workers,
) -> None:
    """Serve checkpoints over HTTP: OpenAI's completions and chat API, and a page to play in."""
    options = {name: value for name, value in locals().items() if name != "checkpoints"}
    config = ServeConfig(**options)  # checked before torch or the web framework is imported
    named = parse_checkpoints(checkpoints)
    from textgen.serve.launch import named_checkpoints, serve as run_server

    names = list(named_checkpoints(named))
    for line in try_lines(config, names[0]):
        typer.echo(line)
    run_server(named, **options)


def parse_checkpoints(arguments: list[str]) -> dict[str, Path] | list[Path]:
    """NAME=PATH and plain PATH arguments: a mapping when any is named, each plain one by its folder."""
    if not any("=" in argument for argument in arguments):
        return [Path(argument) for argument in arguments]
    named: dict[str, Path] = {}
    for argument in arguments:
        name, given, path = argument.partition("=")
        if not given:
            name, path = Path(argument).resolve().name, argument
        if name in named:
            raise TextgenError(f"two checkpoints are named {name!r}: give them names of their own (NAME=PATH)")
        named[name] = Path(path)
    return named


def try_lines(config: ServeConfig, model: str) -> list[str]:
    """What to print on start: the address, and a curl line and an openai-client line to try."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{config.port}"
    key = ' -H "Authorization: Bearer $TEXTGEN_API_KEY"' if config.api_key else ""
    body = f'{{"model": "{model}", "prompt": "The ", "max_tokens": 50}}'
    client_key = 'os.environ["TEXTGEN_API_KEY"]' if config.api_key else '"none"'
    return [
        f"serving {model!r} at {url} (the page: {url}/ ; Ctrl-C to stop)",
        f"  curl {url}/v1/completions -H 'Content-Type: application/json'{key} -d '{body}'",
        f"  python -c 'import os, openai; print(openai.OpenAI(base_url=\"{url}/v1\", api_key={client_key})"
        f".completions.create(model=\"{model}\", prompt=\"The \", max_tokens=50).choices[0].text)'",
    ]
