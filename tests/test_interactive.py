"""Tests for interactive mode: the Session's commands in-process with scripted lines, and
`textgen sample CHECKPOINT --interactive` end to end through stdin and through a pseudo-terminal."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from textgen.api import TextModel
from textgen.config import SampleConfig
from textgen.cli.interactive import Session

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Scripted:
    """A session fed these lines, one per prompt; None or the end of the lines is EOF (Ctrl-D)."""

    def __init__(self, model: TextModel, lines: list[str | None], **config) -> None:
        self.lines: Iterator[str | None] = iter(lines)
        self.prompts: list[str] = []
        self.screen = io.StringIO()
        self.session = Session(model, SampleConfig(**config), Console(file=self.screen, width=200), self.read)

    def read(self, prompt: str) -> str:
        self.prompts.append(prompt)
        line = next(self.lines, None)
        if line is None:
            raise EOFError
        return line

    def run(self) -> str:
        self.session.run()
        return self.screen.getvalue()


def test_settings_commands_change_the_next_turn(model, capsys):
    script = Scripted(model, [":temp 0.7", ":topk 5", ":topp 0.9", ":penalty 1.2", ":length 40", ":seed 11",
                              "The keeper"])
    screen = script.run()
    config = script.session.config
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty, config.length, config.seed) \
        == (0.7, 5, 0.9, 1.2, 40, 11)
    for message in ("temperature: 0.7", "top k: 5", "top p: 0.9", "repetition penalty: 1.2", "length: 40", "seed: 11"):
        assert message in screen
    expected = model.generate("The keeper", length=40, temperature=0.7, top_k=5, top_p=0.9,
                              repetition_penalty=1.2, seed=11)
    assert capsys.readouterr().out == expected + "\n"
    assert script.session.text == "The keeper" + expected


@pytest.mark.parametrize("line, message", [
    (":temp abc", ":temp needs a number, got 'abc'"),
    (":temp", ":temp needs a number"),
    (":temp 0", ":temp must be greater than 0"),
    (":topk -1", ":topk must be 0 (off) or more, got -1"),
    (":topk 2.5", ":topk needs a whole number, got '2.5'"),
    (":topp 1.5", ":topp must be greater than 0 and at most 1"),
    (":penalty 0.5", ":penalty must be at least 1"),
    (":length 0", ":length must be at least 1"),
    (":seed x", ":seed needs a whole number, got 'x'"),
    (":greedy maybe", ":greedy takes on or off"),
    (":next x", ":next takes a whole number"),
    (":bogus", "unknown command :bogus; :help lists the commands"),
])
def test_a_bad_command_says_why_and_the_session_goes_on(model, capsys, line, message):
    script = Scripted(model, [line, ":seed 1", "The"], length=20)
    screen = script.run()
    assert message in screen
    assert script.session.config.seed == 1  # the next command still ran
    assert capsys.readouterr().out == model.generate("The", length=20, seed=1) + "\n"


def test_an_empty_line_continues_the_text_so_far(model, capsys):
    script = Scripted(model, [":seed 4", "The lamp", ""], length=30)
    script.run()
    first = model.generate("The lamp", length=30, seed=4)
    second = model.generate("The lamp" + first, length=30, seed=4)
    assert capsys.readouterr().out == first + "\n" + second + "\n"
    assert script.session.text == "The lamp" + first + second


def test_next_shows_the_likeliest_tokens_and_a_number_adds_one(model, capsys):
    config = SampleConfig(temperature=1.0, top_k=0)
    table = model.next_tokens("The keeper", top=4, config=config)
    after = model.next_tokens("The keeper" + table[1].text, top=4, config=config)
    script = Scripted(model, ["The keeper", ":next 4", "2", "", ":quit"], length=1, greedy=True,
                      temperature=1.0, top_k=0)
    script.session.write = lambda prompt: setattr(script.session, "text", prompt)  # no continuation this time
    screen = script.run()
    assert script.session.text == "The keeper" + table[1].text
    rows = [line for line in screen.splitlines() if re.match(r"^\s+\d+ │", line)]
    assert len(rows) == 8  # two tables of four
    for row, entry in zip(rows, table + after):
        assert f"{entry.probability:.1%}" in row
    assert "pick 1-4 (Enter to go back) > " in script.prompts
    assert capsys.readouterr().out.endswith("The keeper" + table[1].text + "\n")


def test_next_rejects_a_number_out_of_range_and_asks_again(model):
    script = Scripted(model, [":next 3", "7", "x", "", ":quit"], temperature=1.0, top_k=0)
    screen = script.run()
    assert screen.count("type a number from 1 to 3, or press Enter to go back") == 2
    assert script.session.text == ""


def test_greedy_stop_clear_and_settings(model, capsys):
    script = Scripted(model, [":greedy", ":stop \\n", ":stop e", ":settings", "The", ":stop", ":greedy off",
                              ":clear"], length=200)
    screen = script.run()
    assert "greedy: on" in screen and "stop: '\\n'" in screen and "stop: '\\n', 'e'" in screen
    assert "stop: none" in screen and "greedy: off" in screen and "the text so far is forgotten" in screen
    assert re.search(r"temperature\s+0\.8 \(unused: greedy\)", screen)
    whole = model.generate("The", length=200, greedy=True)
    assert capsys.readouterr().out == whole[: min(whole.index(s) for s in ("\n", "e") if s in whole)] + "\n"
    assert script.session.text == "" and not script.session.config.greedy


def test_unknown_skip_lets_a_seed_phrase_with_unseen_symbols_go_on(model, capsys):
    script = Scripted(model, [":unknown skip", "Zebra"], length=10, seed=3)
    screen = script.run()
    assert "unknown: skip" in screen and "never saw" not in screen
    assert capsys.readouterr().out == model.generate("Zebra", length=10, seed=3, unknown="skip") + "\n"


def test_help_lists_a_command_for_every_setting_with_what_it_takes(model):
    screen = Scripted(model, [":help"]).run()
    for usage in (":temp X", ":topk N", ":greedy [on|off]", ":stop [TEXT]", ":seed [N]", ":unknown WORD"):
        assert usage in screen
    assert "Alone: fresh each turn." in screen and ":num-samples" not in screen


def test_ctrl_d_and_quit_end_the_session(model):
    for end in (None, ":quit", ":q", ":exit"):
        script = Scripted(model, [end, ":temp 0.1"])
        script.run()
        assert script.session.config.temperature == 0.8  # nothing after the end was read


def test_unseen_symbols_in_a_seed_phrase_are_a_message_not_the_end(model, capsys):
    script = Scripted(model, ["Zebra", ":seed 2", "The"], length=10)
    screen = script.run()
    assert "never saw" in screen and "'Z'" in screen and "(:unknown skip or :unknown replace" in screen
    assert capsys.readouterr().out == model.generate("The", length=10, seed=2) + "\n"


# --- end to end ---------------------------------------------------------------------------------


def textgen_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_interactive_through_stdin(char_checkpoint, model):
    script = "\n".join([":seed 5", ":temp 0.6", ":temp abc", ":topk 0", "The keeper", ":next 3", "1", "",
                        ":nonsense", ":quit", "never read"]) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "textgen", "sample", str(char_checkpoint), "--interactive", "--length", "50"],
        input=script, capture_output=True, text=True, encoding="utf-8", timeout=120, env=textgen_env(),
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    continuation = model.generate("The keeper", length=50, seed=5, temperature=0.6, top_k=0)
    assert "> The keeper" + continuation + "\n" in out
    assert ":temp needs a number, got 'abc'" in out and "unknown command :nonsense" in out
    best = model.next_tokens("The keeper" + continuation, top=3, config=SampleConfig(temperature=0.6, top_k=0))
    assert f"{best[0].probability:.1%}" in out
    assert ("The keeper" + continuation + best[0].text)[-200:] + "\n" in out  # the text with the pick added
    assert "never read" not in out and "Traceback" not in out


@pytest.mark.slow
def test_interactive_ends_cleanly_at_the_end_of_stdin(char_checkpoint, model):
    done = subprocess.run(
        [sys.executable, "-m", "textgen", "sample", str(char_checkpoint), "-i", "--length", "20", "--seed", "3",
         "--prompt", "The"],
        input="In the\n", capture_output=True, text=True, encoding="utf-8", timeout=120, env=textgen_env(),
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "The" + model.generate("The", length=20, seed=3) + "\n" in done.stdout  # --prompt is the first turn
    assert "> In the" + model.generate("In the", length=20, seed=3) + "\n" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_interactive_in_a_terminal_streams_and_leaves_on_ctrl_d(char_checkpoint, model):
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "sample", str(char_checkpoint), "--interactive", "--length", "30"],
        stdin=slave, stdout=slave, stderr=slave, env={**textgen_env(), "TERM": "xterm", "COLUMNS": "100"},
        close_fds=True,
    )
    os.close(slave)
    output = b""

    def read_until(marker: bytes, timeout: float = 300) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    output += os.read(master, 65536)
                except OSError:
                    return

    try:
        read_until(b"> ")
        os.write(master, b":seed 9\n")
        read_until(b"seed: 9")
        os.write(master, b"The lamp\n")
        expected = model.generate("The lamp", length=30, seed=9)
        read_until(expected.replace("\n", "\r\n").encode()[-5:] + b"\r\n> ")
        os.write(master, b"\x04")  # Ctrl-D at an empty prompt
        assert process.wait(timeout=300) == 0
        read_until(b"\x00", timeout=1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = ANSI.sub("", output.decode("utf-8", errors="replace")).replace("\r\n", "\n")
    assert "The lamp" + expected + "\n" in text
    assert "Traceback" not in text
