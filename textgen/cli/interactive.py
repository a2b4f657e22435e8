"""Interactive sampling: a prompt loop where each line typed is a seed phrase whose continuation
streams back, `:commands` change the settings between turns, and `:next` lets the user pick the
next token by number from a table of the likeliest.

    > ROMEO:                  a seed phrase: its continuation streams
    >                         an empty line: continue the text so far
    > :temp 0.7               settings: :temp :topk :topp :penalty :length :greedy :stop :seed
    > :next 5                 the 5 likeliest next tokens; type a number to add one
    > :quit                   or Ctrl-D

Reads lines through a function (input() by default), so a pseudo-terminal, a pipe or a test can
drive it; a bad command prints a message and the loop goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from textgen.config import OptionError, SampleConfig, unescape
from textgen.errors import TextgenError

DEFAULT_NEXT = 10  # rows of the :next table

HELP = """\
Type a seed phrase and press Enter to watch it continue; an empty line continues the text so far.
  :temp X      temperature (above 0)            :topk K     top-k (0 = off)
  :topp P      top-p, in (0, 1] (1 = off)       :penalty R  repetition penalty (1 = off)
  :length N    characters per turn              :greedy     greedy decoding on/off
  :stop TEXT   add a stop text (\\n = line break); :stop alone clears them
  :seed N      repeatable turns; :seed alone for a fresh seed each turn
  :next [N]    the N likeliest next tokens; type a number to add one, Enter to go back
  :settings    show the settings        :clear   forget the text so far
  :help        this list                :quit    leave (or Ctrl-D)"""

# Each setting command: its names, the SampleConfig field, how to read the value, and what it is.
_SETTINGS: list[tuple[tuple[str, ...], str, Callable[[str], Any], str]] = [
    ((":temp", ":temperature", ":t"), "temperature", float, "a number"),
    ((":topk", ":top-k", ":k"), "top_k", int, "a whole number"),
    ((":topp", ":top-p", ":p"), "top_p", float, "a number"),
    ((":penalty", ":repetition-penalty", ":rep"), "repetition_penalty", float, "a number"),
    ((":length", ":len", ":n"), "length", int, "a whole number"),
]


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
            self.console.print(HELP, markup=False, highlight=False, soft_wrap=True)
        elif command in (":settings", ":show"):
            from textgen.render.interactive import settings_table

            self.console.print(settings_table(self.config))
        elif command == ":clear":
            self.text = ""
            self.say("the text so far is forgotten")
        elif command == ":next":
            return self.pick_next(argument)
        elif command == ":greedy":
            choice = {"": not self.config.greedy, "on": True, "off": False}.get(argument.lower())
            if choice is None:
                self.warn(":greedy takes on or off (or nothing, to switch)")
            else:
                self.change(greedy=choice)
        elif command == ":stop":
            self.change(stop=self.config.stop + (unescape(argument),) if argument else ())
        elif command == ":seed":
            self.set_seed(argument)
        else:
            self.set_number(command, argument)
        return True

    # --- writing --------------------------------------------------------------------------------

    def write(self, prompt: str | None) -> None:
        """Continue `prompt` (a new seed phrase), or the text so far when None; stream the output."""
        from textgen.render.console import write_piece

        seed_phrase = self.text if prompt is None else prompt
        try:
            self.model.check_prompt(seed_phrase, self.config.unknown)
        except TextgenError as error:
            self.warn(str(error))
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
        fields = ("length", "temperature", "top_k", "top_p", "greedy", "repetition_penalty", "stop", "seed", "unknown")
        return {name: getattr(self.config, name) for name in fields}

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
                self.warn(str(error))
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

    def set_number(self, command: str, argument: str) -> None:
        for names, field, parse, kind in _SETTINGS:
            if command in names:
                try:
                    value = parse(argument)
                except ValueError:
                    self.warn(f"{names[0]} needs {kind}, got {argument!r}" if argument else f"{names[0]} needs {kind}")
                    return
                self.change(**{field: value})
                return
        self.warn(f"unknown command {command}; :help lists the commands")

    def set_seed(self, argument: str) -> None:
        if not argument:
            self.change(seed=None)
            return
        try:
            seed = int(argument)
        except ValueError:
            self.warn(f":seed needs a whole number, got {argument!r}")
            return
        self.change(seed=seed)

    def change(self, **changes: Any) -> None:
        """Apply settings if they pass the same checks as the command line's, else say why not."""
        try:
            config = dataclasses.replace(self.config, **changes)
        except OptionError as error:
            self.warn(error.worded(_command_for(error.field)))
            return
        self.config = config
        name, value = next(iter(changes.items()))
        self.say(f"{name.replace('_', ' ')}: {_shown(name, value)}")

    def say(self, message: str) -> None:
        self.console.print(Text(message, style="dim"), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(Text(message, style="yellow"), soft_wrap=True)


def _shown(name: str, value: Any) -> str:
    if name == "stop":
        return ", ".join(map(repr, value)) or "none"
    if name == "seed":
        return "fresh each turn" if value is None else str(value)
    if name == "greedy":
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _command_for(field: str) -> str:
    return next((names[0] for names, name, _, _ in _SETTINGS if name == field), f":{field}")


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
