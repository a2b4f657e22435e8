"""The documents against the code: every `textgen ...` command line in the README and docs/ must
parse with the real command line's options, and every link between the pages must land.

Commands are parsed, never run: click's `make_context` checks each option's name and value without
calling the command, so these tests start no process, import no torch and take a second."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from textgen.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "corpora" / "README.md",
                    *(ROOT / "docs").glob("*.md")])
COMMAND = typer.main.get_command(app)
# A shell word that ends the textgen command: a pipe, a redirection, the next command.
SHELL_BREAKS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", ")"}
# "textgen" as a program name: not "textgen.api", not a word ending in "textgen".
PROGRAM = re.compile(r"(?<![\w.\-])textgen[ \t]+")
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")


def snippets(text: str) -> list[str]:
    """The code in a Markdown text: each line of its code blocks (a trailing backslash joins the
    next line) and each inline code span, which may wrap across lines."""
    found = []
    for block in CODE_BLOCK.findall(text):
        found.extend(block.replace("\\\n", " ").splitlines())
    prose = CODE_BLOCK.sub("", text)
    found.extend(span.replace("\n", " ") for span in INLINE_CODE.findall(prose))
    return found


def command_lines(text: str) -> list[list[str]]:
    """The arguments after `textgen` of every textgen command line in the text, cut where the shell
    would start something else. Words such as "textgen import" that name no command are left out."""
    commands = []
    for snippet in snippets(text):
        for match in PROGRAM.finditer(snippet):
            rest = snippet[match.end():]
            first = rest.split(maxsplit=1)[0] if rest.strip() else ""
            if first not in COMMAND.commands and not first.startswith("-"):
                continue  # "from textgen import load": textgen is not the program here
            lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words = []
            for word in lexer:
                if word in SHELL_BREAKS:
                    break
                words.append(word)
            commands.append(words)
    return commands


def parse(words: list[str]) -> None:
    """Parse `textgen WORDS` as the CLI would, without running it. Raises click's UsageError (an
    unknown option, a value of the wrong type, a missing argument); --help and --version end in
    click's Exit, which is a successful parse. A command named alone ("`textgen info` lists ...")
    is a mention in prose, so only the command's existence is checked. A placeholder in capitals
    stands for any value, so where an option refuses one (`--max-time T`) a number stands in."""
    if len(words) == 1 and not words[0].startswith("-"):
        words = [words[0], "--help"]
    words = list(words)
    while True:
        try:
            return parse_once(words)
        except typer.BadParameter as error:
            at = placeholder_given_to(error, words)
            if at is None:
                raise
            words[at] = "1"


def placeholder_given_to(error: typer.BadParameter, words: list[str]) -> int | None:
    """Where in `words` the option the error names was given a placeholder such as T or SECONDS."""
    names = set(getattr(error.param, "opts", ()))
    for at in range(1, len(words)):
        if words[at - 1] in names and PLACEHOLDER.fullmatch(words[at]):
            return at
    return None


def parse_once(words: list[str]) -> None:
    try:
        if words[0].startswith("-"):
            COMMAND.make_context("textgen", list(words))
            return
        root = COMMAND.make_context("textgen", [words[0]])
        command = COMMAND.get_command(root, words[0])
        command.make_context(words[0], list(words[1:]), parent=root)
    except Exception as error:  # click's Exit, from the copy Typer bundles, found by name as app.py does
        if type(error).__name__ != "Exit" or getattr(error, "exit_code", 0) != 0:
            raise


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(f"{path.relative_to(ROOT)}: textgen {' '.join(words)}", words)
            for path in DOCUMENTS for words in command_lines(path.read_text(encoding="utf-8"))]


DOCUMENTED = documented_commands()


@pytest.mark.parametrize("words", [words for _, words in DOCUMENTED], ids=[name for name, _ in DOCUMENTED])
def test_every_documented_command_line_parses_with_the_real_options(words):
    parse(words)


def test_the_parser_rejects_an_option_that_does_not_exist():
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    with pytest.raises(usage_error, match="--learnig-rate"):
        parse(["train", "corpus.txt", "--learnig-rate", "0.01"])
    with pytest.raises(usage_error):
        parse(["sample", "CHECKPOINT", "--temperature", "warm"])


def test_command_lines_are_found_in_code_blocks_inline_code_and_after_torchrun():
    text = ("Run `textgen info CHECKPOINT` or `textgen.api`.\n\n```sh\n"
            "textgen sample ckpt -p \"A B\" --stop \"\\n\"   # four\n"
            "torchrun --standalone -m textgen train dir/ \\\n    --batch-size 64 | tee log\n"
            "python -c 'from textgen import load'\n```\n")
    assert command_lines(text) == [
        ["sample", "ckpt", "-p", "A B", "--stop", "\\n"],
        ["train", "dir/", "--batch-size", "64"],
        ["info", "CHECKPOINT"],
    ]


def test_the_readme_shows_each_command_three_times_and_fits_in_200_lines():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = [words[0] for words in command_lines(readme)]
    assert min(shown.count(name) for name in ("train", "sample", "evaluate")) >= 3, shown
    assert len(readme.splitlines()) < 200
    assert "make test" in readme  # .ci/run runs the README's test command


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))
    titles = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in titles}


def test_every_link_between_the_pages_lands_on_a_file_and_heading():
    pages = [*DOCUMENTS, ROOT / "benchmarks" / "HISTORY.md"]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists() or (anchor and anchor not in heading_anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_code_comments_link_to_headings_that_exist_in_the_benchmark_history():
    anchors = heading_anchors(ROOT / "benchmarks" / "HISTORY.md")
    cited = {anchor for source in (ROOT / "textgen").rglob("*.py")
             for anchor in re.findall(r"benchmarks/HISTORY\.md#([\w\-]+)", source.read_text(encoding="utf-8"))}
    assert cited and cited <= anchors, sorted(cited - anchors)
