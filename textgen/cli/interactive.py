"""Interactive sampling: a prompt loop where each line typed is a seed phrase whose continuation
streams back, `:commands` change the settings between turns, and `:next` lets the user pick the
next token by number from a table of the likeliest.

    > ROMEO:                  a seed phrase: its continuation streams
    >                         an empty line: continue the text so far
    > :temp 0.7               settings: one command per SampleConfig field (:temp, :topk, :stop, ...)
    > :next 5                 the 5 likeliest next tokens; type a number to add one
    > :quit                   or Ctrl-D

Reads lines through a function (input() by default), so a pseudo-terminal, a pipe or a test can
drive it; a bad command prints a message and the loop goes on.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.text import Text

from textgen.config import SampleConfig, SettingError, sample_settings, unescape
from textgen.errors import TextgenError

DEFAULT_NEXT = 10  # rows of the :next table
_ARGUMENTS = {bool: "[on|off]", int: "N", float: "X", str: "WORD"}  # what a command takes, by its setting's type
# Sampling settings whose commands are not simply :field-name; the first name is the one shown.
_COMMAND_NAMES = {
    "length": (":length", ":len", ":n"),
    "temperature": (":temp", ":temperature", ":t"),
    "top_k": (":topk", ":top-k", ":k"),
    "top_p": (":topp", ":top-p", ":p"),
    "repetition_penalty": (":penalty", ":repetition-penalty", ":rep"),
    "num_samples": (),  # the loop writes one sample at a time
}


@dataclass(frozen=True)
class SettingCommand:
    """The interactive command that changes one sampling setting, made from its SampleConfig field."""

    names: tuple[str, ...]  # the first is the one shown in help and messages
    field: str
    value_type: Any  # the field's type: int, float, bool, str, tuple[str, ...] or one of them | None
    help: str
    unset: str  # how None reads

    @property
    def usage(self) -> str:
        """The command as help shows it, with what it takes: ":temp X", ":greedy [on|off]"."""
        inner = _optional_type(self.value_type)
        if _is_texts(self.value_type):
            argument = "[TEXT]"
        elif inner is not None:
            argument = f"[{_ARGUMENTS.get(inner, 'TEXT')}]"
        else:
            argument = _ARGUMENTS.get(self.value_type, "TEXT")
        return f"{self.names[0]} {argument}"

    @property
    def alone(self) -> str | None:
        """What the command does with nothing after it, where that is not an error."""
        if self.value_type is bool:
            return "switches it"
        if _is_texts(self.value_type):
            return "clears them"
        return self.unset if _optional_type(self.value_type) is not None else None

    def value(self, argument: str, current: Any) -> Any:
        """The value `argument` asks for; ValueError saying what the command takes when it is unreadable."""
        if self.value_type is bool:
            choice = {"": not current, "on": True, "off": False}.get(argument.lower())
            if choice is None:
                raise ValueError("takes on or off (or nothing, to switch)")
            return choice
        if _is_texts(self.value_type):  # each command adds one text; the bare command clears them
            return current + (unescape(argument),) if argument else ()
        inner = _optional_type(self.value_type)
        if inner is not None:
            return None if not argument else _read(inner, argument)
        return _read(self.value_type, argument)


def _read(value_type: Any, argument: str) -> Any:
    kind = {int: "a whole number", float: "a number"}.get(value_type)
    if kind is None:
        return argument
    try:
        return value_type(argument)
    except ValueError:
        raise ValueError(f"needs {kind}, got {argument!r}" if argument else f"needs {kind}") from None


def _optional_type(value_type: Any) -> Any:
    """X for a type `X | None`, else None."""
    others = [arg for arg in typing.get_args(value_type) if arg is not type(None)]
    return others[0] if len(others) == 1 and len(typing.get_args(value_type)) == 2 else None


def _is_texts(value_type: Any) -> bool:
    return typing.get_origin(value_type) is tuple


def setting_commands(setting: dataclasses.Field) -> tuple[str, ...]:
    """The loop's names for a sampling setting, the first the one it is shown by; () for none."""
    return _COMMAND_NAMES.get(setting.name, (":" + setting.name.replace("_", "-"),))


def _setting_commands() -> dict[str, SettingCommand]:
    """Every name of every setting command, from SampleConfig's fields."""
    types = typing.get_type_hints(SampleConfig)
    commands = [SettingCommand(setting_commands(setting), setting.name, types[setting.name],
                               setting.metadata["help"], setting.metadata["unset"])
                for setting in sample_settings() if setting_commands(setting)]
    return {name: command for command in commands for name in command.names}


SETTING_COMMANDS = _setting_commands()


def help_text() -> str:
    """What :help prints: the setting commands (one per SampleConfig field), then the loop's own."""
    settings = dict.fromkeys(SETTING_COMMANDS.values())  # each once, in the fields' order
    lines = ["Type a seed phrase and press Enter to watch it continue; an empty line continues the text so far."]
    lines += [f"  {command.usage:<18} {command.help}" + (f" Alone: {command.alone}." if command.alone else "")
              for command in settings]
    lines += [
        "  :next [N]          the N likeliest next tokens; type a number to add one, Enter to go back",
        "  :settings          show the settings        :clear   forget the text so far",
        "  :help              this list                :quit    leave (or Ctrl-D)",
    ]
    return "\n".join(lines)


class Session:
    """The state of one interactive session: the settings and the text written so far."""

    def __init__(self, model: Any, config: SampleConfig, console: Console,
                 read_line: Callable[[str], str] = input) -> None:
        self.model = model
        self.config = dataclasses.replace(config, num_samples=1)
        self.console = console
        self.read_line = read_line
        self.text = ""  # seed phrases and continuations so far: what :next and Enter continue

    def run(self, first_prompt: str | None = None) -> None:
        self.say("textgen interactive: type a seed phrase and press Enter; :help lists the commands, "
                 ":quit or Ctrl-D leaves.")
        if first_prompt is not None:
            self.write(first_prompt)
        while True:
            try:
                line = self.read_line("> ")
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return
            if not self.handle(line):
                return

    def handle(self, line: str) -> bool:
        """Act on one line; False when the session should end."""
        command, _, argument = line.strip().partition(" ") if line.startswith(":") else ("", "", "")
        argument = argument.strip()
        if not command:
            self.write(line if line else None)
        elif command in (":quit", ":q", ":exit"):
            return False
        elif command in (":help", ":h", ":?"):
            self.console.print(help_text(), markup=False, highlight=False, soft_wrap=True)
        elif command in (":settings", ":show"):
            from textgen.render.interactive import settings_table

            self.console.print(settings_table(self.config))
        elif command == ":clear":
            self.text = ""
            self.say("the text so far is forgotten")
        elif command == ":next":
            return self.pick_next(argument)
        elif command in SETTING_COMMANDS:
            self.set(SETTING_COMMANDS[command], argument)
        else:
            self.warn(f"unknown command {command}; :help lists the commands")
        return True

    # --- writing --------------------------------------------------------------------------------

    def write(self, prompt: str | None) -> None:
        """Continue `prompt` (a new seed phrase), or the text so far when None; stream the output."""
        from textgen.render.console import write_piece

        seed_phrase = self.text if prompt is None else prompt
        try:
            self.model.check_prompt(seed_phrase, self.config.unknown)
        except TextgenError as error:
            self.warn(_worded(error))
            return
        if prompt is not None:
            self.console.print(Text(prompt, style="bold"), end="", soft_wrap=True)
        written = ""
        try:
            for piece in self.model.stream(seed_phrase, **self.sample_settings()):
                written += piece
                write_piece(piece)
        except KeyboardInterrupt:
            write_piece("\n")
            self.say("stopped")
        else:
            write_piece("\n")
        self.text = seed_phrase + written

    def sample_settings(self) -> dict[str, Any]:
        return {setting.name: getattr(self.config, setting.name) for setting in sample_settings()}

    def pick_next(self, argument: str) -> bool:
        """Show the likeliest next tokens and add the ones the user picks; False on Ctrl-D."""
        from textgen.render.console import write_piece
        from textgen.render.interactive import context_tail, next_tokens_table

        try:
            top = int(argument) if argument else DEFAULT_NEXT
        except ValueError:
            self.warn(f":next takes a whole number of tokens to show, not {argument!r}")
            return True
        if not 1 <= top <= 1000:
            self.warn(f":next shows between 1 and 1000 tokens, not {top}")
            return True
        while True:
            try:
                candidates = self.model.next_tokens(self.text, top=top, config=self.config)
            except TextgenError as error:
                self.warn(_worded(error))
                return True
            self.say("after " + context_tail(self.text))
            self.console.print(next_tokens_table(candidates))
            try:
                answer = self.read_line(f"pick 1-{len(candidates)} (Enter to go back) > ").strip()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return False
            if not answer:
                return True
            if not answer.isdigit() or not 1 <= int(answer) <= len(candidates):
                self.warn(f"type a number from 1 to {len(candidates)}, or press Enter to go back")
                continue
            chosen = candidates[int(answer) - 1].text
            self.text += chosen
            write_piece(self.text[-200:] + "\n")

    # --- settings -------------------------------------------------------------------------------

    def set(self, command: SettingCommand, argument: str) -> None:
        try:
            value = command.value(argument, getattr(self.config, command.field))
        except ValueError as error:
            self.warn(f"{command.names[0]} {error}")
            return
        self.change(**{command.field: value})

    def change(self, **changes: Any) -> None:
        """Apply settings if they pass the same checks as the command line's, else say why not."""
        try:
            config = dataclasses.replace(self.config, **changes)
        except SettingError as error:
            self.warn(error.worded(command_for))
            return
        self.config = config
        name, value = next(iter(changes.items()))
        self.say(f"{name.replace('_', ' ')}: {_shown(name, value)}")

    def say(self, message: str) -> None:
        self.console.print(Text(message, style="dim"), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(Text(message, style="yellow"), soft_wrap=True)


def _shown(name: str, value: Any) -> str:
    if value is None:
        return next(command.unset for command in SETTING_COMMANDS.values() if command.field == name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(map(repr, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def command_for(field: str) -> str:
    """The interactive loop's name for a setting, as its messages word it."""
    return next((command.names[0] for command in SETTING_COMMANDS.values() if command.field == field), f":{field}")


def _worded(error: TextgenError) -> str:
    return error.worded(command_for) if isinstance(error, SettingError) else str(error)


def run_interactive(model: Any, config: SampleConfig, first_prompt: str | None = None,
                    read_line: Callable[[str], str] | None = None) -> None:
    """The prompt loop on the terminal (or whatever stdin is), until :quit or Ctrl-D."""
    from textgen.render.console import console

    if read_line is None:
        try:
            import readline  # noqa: F401  (line editing and history for input(), where available)
        except ImportError:
            pass
        read_line = input
    Session(model, config, console, read_line).run(first_prompt)
