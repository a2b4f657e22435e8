"""What the end-to-end tests of the `textgen` command line share (test_cli.py and test_cli_*.py):
small real texts in two languages, running textgen as a real process or in this one, the one-line
error check, and the record of a model trained for the session (the fixtures that use them are in
conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# --- text -------------------------------------------------------------------------------------

PROSE = """\
The Gettysburg Address

Four score and seven years ago our fathers brought forth on this continent, a new nation,
conceived in Liberty, and dedicated to the proposition that all men are created equal.

Now we are engaged in a great civil war, testing whether that nation, or any nation so
conceived and so dedicated, can long endure. We are met on a great battle-field of that war.
We have come to dedicate a portion of that field, as a final resting place for those who here
gave their lives that that nation might live. It is altogether fitting and proper that we
should do this.

But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow --
this ground. The brave men, living and dead, who struggled here, have consecrated it, far
above our poor power to add or detract. The world will little note, nor long remember what we
say here, but it can never forget what they did here. It is for us the living, rather, to be
dedicated here to the unfinished work which they who fought here have thus far so nobly
advanced. It is rather for us to be here dedicated to the great task remaining before us --
that from these honored dead we take increased devotion to that cause for which they gave the
last full measure of devotion -- that we here highly resolve that these dead shall not have
died in vain -- that this nation, under God, shall have a new birth of freedom -- and that
government of the people, by the people, for the people, shall not perish from the earth.

A Tale of Two Cities

It was the best of times, it was the worst of times, it was the age of wisdom, it was the age
of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season
of Light, it was the season of Darkness, it was the spring of hope, it was the winter of
despair, we had everything before us, we had nothing before us, we were all going direct to
Heaven, we were all going direct the other way -- in short, the period was so far like the
present period, that some of its noisiest authorities insisted on its being received, for good
or for evil, in the superlative degree of comparison only.

There were a king with a large jaw and a queen with a plain face, on the throne of England;
there were a king with a large jaw and a queen with a fair face, on the throne of France. In
both countries it was clearer than crystal to the lords of the State preserves of loaves and
fishes, that things in general were settled for ever.

Pride and Prejudice

It is a truth universally acknowledged, that a single man in possession of a good fortune,
must be in want of a wife.

However little known the feelings or views of such a man may be on his first entering a
neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he
is considered the rightful property of some one or other of their daughters.

"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is
let at last?"

Mr. Bennet replied that he had not.

"But it is," returned she; "for Mrs. Long has just been here, and she told me all about it."

Mr. Bennet made no answer.

"Do you not want to know who has taken it?" cried his wife impatiently.

"You want to tell me, and I have no objection to hearing it."

This was invitation enough.

The End
"""

CHINESE = """\
春天来了，山上的花都开了。小河里的水慢慢地流着，河边的柳树长出了新的叶子。
孩子们在草地上放风筝，老人们坐在树下喝茶，说着过去的故事。
太阳从东边升起来，照在田野上。农民们早早地来到地里，开始一天的工作。
他们种下希望，也种下对未来的期待。我们的家乡在春天里是最美的。
夏天的时候，天气很热。人们喜欢在晚上出来散步，在河边吹吹风，看看天上的星星。
小朋友们最喜欢吃西瓜，一边吃一边笑。我们的夏天是快乐的夏天。
秋天是收获的季节。田里的稻子黄了，树上的果子红了。
大家一起把粮食收回家，脸上都是高兴的笑容。我们的秋天是丰收的秋天。
冬天下雪了，整个世界变成了白色。孩子们在雪地里堆雪人，打雪仗，玩得非常开心。
家家户户都准备过新年，街上到处都是红色的灯笼。我们的冬天是温暖的冬天。
一年四季，每个季节都有自己的美丽。我们应该好好地生活，珍惜每一天。
我们热爱我们的家乡，热爱我们的生活，也热爱我们身边的每一个人。
春天的花，夏天的风，秋天的果，冬天的雪，都是我们心里最美的风景。
"""

# A model small enough to train 30 steps in well under a second.
TINY = ["--hidden-size", "32", "--embedding-size", "16", "--layers", "1", "--seq-len", "16", "--batch-size", "8"]
TOKENIZERS = ("char", "word", "subword")
TOKENIZER_OPTIONS = {"char": [], "word": [], "subword": ["--vocab-size", "400"]}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Variables that would leak the caller's terminal, colour choice, proxy or corpus mirror into a run.
LEAKY_VARIABLES = (
    "COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "TEXTGEN_SHAKESPEARE_URL", "TEXTGEN_CACHE_DIR", "XDG_CACHE_HOME",
)


# --- running the CLI --------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def process_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(
        TEXTGEN_CACHE_DIR=str(cache),
        # Two threads on a busy two-core machine make a tiny model tens of times slower.
        OMP_NUM_THREADS="1",
        PYTHONIOENCODING="utf-8",
        PYTHONUNBUFFERED="1",
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def run_textgen(args: list[str], cwd: Path, timeout: float = 600, **extra_env: str) -> CliResult:
    """`python -m textgen ARGS` as a real process, the way a user runs it."""
    completed = subprocess.run(
        [sys.executable, "-m", "textgen", *args],
        cwd=cwd, env=process_env(cwd / "cache", **extra_env), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, encoding="utf-8", timeout=timeout,
    )
    return CliResult(completed.returncode, ANSI.sub("", completed.stdout), ANSI.sub("", completed.stderr))


def run_in_this_process(args: list[str], cwd: Path) -> CliResult:
    """textgen.cli.main ARGS in this process, from `cwd` with its own corpus cache, as the `cli`
    fixture runs it but usable outside one test: a real process would mark every test that shares
    the result slow."""
    from textgen.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.chdir(cwd)
        for variable in LEAKY_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("TEXTGEN_CACHE_DIR", str(cwd / "cache"))
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = 0 if exit_.code is None else exit_.code
    return CliResult(code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue()))


def assert_one_line_error(result: CliResult, *fragments: str, code: int = 2) -> None:
    assert result.code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- models trained once for the session -------------------------------------------------------


@dataclass
class TrainedRun:
    tokenizer: str
    workdir: Path
    text_file: Path
    checkpoint: Path
    out_arg: str  # --out as typed: relative to workdir, so the printed command is short
    result: CliResult

    @property
    def config(self) -> dict:
        return json.loads((self.checkpoint / "config.json").read_text(encoding="utf-8"))


def train_tiny_model(workdir: Path, tokenizer: str, text_name: str, text: str, *options: str) -> TrainedRun:
    workdir.mkdir(parents=True, exist_ok=True)
    text_file = workdir / text_name
    text_file.write_text(text, encoding="utf-8")
    out = f"ck-{tokenizer}"
    result = run_in_this_process(
        ["train", text_name, "--out", out, "--tokenizer", tokenizer, *TINY, "--max-steps", "30", *options],
        cwd=workdir,
    )
    assert result.code == 0, result.output
    return TrainedRun(tokenizer, workdir, text_file, workdir / out, out, result)
