"""The `textgen` application: its commands, and every anticipated failure turned into one line on
stderr and a non-zero exit. Each command lives in its own module and is a thin shell over the
library; torch is imported inside the commands, so `textgen --help` answers at once."""

# Annotations are evaluated as the module loads, not postponed: Typer would otherwise compile and
# evaluate each option's annotation string again every time it starts, --help included.

import sys
from typing import Annotated

import typer

from textgen import __version__
from textgen.cli.evaluate import evaluate
from textgen.cli.info import info
from textgen.cli.sample import sample
from textgen.cli.serve import serve
from textgen.cli.train import train
from textgen.config import SettingError
from textgen.errors import TextgenError

# Typer raises click's exceptions (from its own bundled copy in recent releases); find them
# through a public name so either layout works.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="textgen",
    help="Train a recurrent language model on your text, generate from it, and measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
for command in (train, sample, evaluate, info, serve):
    app.command()(command)

# Config fields whose command-line option is not simply --field-name.
_FLAG_NAMES = {"kind": "--tokenizer", "adam_beta1": "adam_beta1 (in the checkpoint's settings)",
               "corpus": "the text argument (textgen train FILE --resume CHECKPOINT)"}


def flag_for(field: str) -> str:
    return _FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def field_for(option: str) -> str:
    """The config field a command's option (by its parameter name) sets: flag_for the other way."""
    flag = "--" + option.replace("_", "-")
    return next((field for field, name in _FLAG_NAMES.items() if name == flag), option)


def print_error(message: str) -> None:
    # The console module draws progress, tables and charts: --help and a run that ends well skip loading it.
    from textgen.render.console import print_error as print_error_line

    print_error_line(message)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"textgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train a recurrent language model on your text, generate from it, and measure it."""


def run(argv: list[str] | None = None) -> None:
    """Run the CLI with every anticipated failure as one line on stderr and a non-zero exit
    (textgen.cli.main wraps this, so an interruption while it is imported is handled too)."""
    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]  # a bare `textgen` shows what it can do, and that is not an error
    try:
        code = app(args=argv, prog_name="textgen", standalone_mode=False)
    except SettingError as error:
        print_error(error.worded(flag_for))
        sys.exit(error.exit_code)
    except TextgenError as error:
        print_error(str(error))
        sys.exit(error.exit_code)
    except _UsageError as error:
        command = f" {error.ctx.command_path.split(' ', 1)[1]}" if error.ctx and " " in error.ctx.command_path else ""
        print_error(f"{error.format_message()} (see textgen{command} --help)")
        sys.exit(2)
    except _ClickException as error:
        print_error(error.format_message())
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted")
        sys.exit(130)
    if code == 130:  # Typer turns Ctrl-C inside a command into exit code 130
        print_error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
