"""End-to-end tests of the `textgen` command line: train, sample, evaluate and info on small real
text, and the one-line error (exit 2, no traceback) that every bad input should give.

One model per tokenizer is trained once for the module by a real `python -m textgen train`
process. The many error cases call textgen.cli.main in-process (it is what the console script
runs, and it keeps torch to one import); a representative few run as real processes too.
Every run works in a temporary folder with its own corpus cache, so nothing touches the
repository or ~/.cache.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import textgen
from conftest import TrainingProcess
from textgen.cli import main
from textgen.config import PRESETS

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
PRESET_DROPOUT = {name: preset.model["dropout"] for name, preset in PRESETS.items()}
TOKENIZER_OPTIONS = {"char": [], "word": [], "subword": ["--vocab-size", "400"]}
TOKENIZER_FILE = {"char": "tokenizer.json", "word": "tokenizer.json", "subword": "tokenizer.model"}
SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
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


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., CliResult]]:
    """textgen.cli.main in this process, run from tmp_path with its own corpus cache."""
    import torch

    monkeypatch.chdir(tmp_path)
    for variable in LEAKY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(0 if code is None else code, ANSI.sub("", out), ANSI.sub("", err))

    yield call
    torch.set_num_threads(threads)


def assert_one_line_error(result: CliResult, *fragments: str, code: int = 2) -> None:
    assert result.code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- models trained once for the module -------------------------------------------------------


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


def _train(workdir: Path, tokenizer: str, text_name: str, text: str, *options: str) -> TrainedRun:
    workdir.mkdir(parents=True, exist_ok=True)
    text_file = workdir / text_name
    text_file.write_text(text, encoding="utf-8")
    out = f"ck-{tokenizer}"
    result = run_textgen(
        ["train", text_name, "--out", out, "--tokenizer", tokenizer, *TINY, "--max-steps", "30", *options],
        cwd=workdir,
    )
    assert result.code == 0, result.output
    return TrainedRun(tokenizer, workdir, text_file, workdir / out, out, result)


@pytest.fixture(scope="module")
def train_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], TrainedRun]:
    runs: dict[tuple[str, str], TrainedRun] = {}

    def get(tokenizer: str, language: str = "english") -> TrainedRun:
        if (tokenizer, language) not in runs:
            workdir = tmp_path_factory.mktemp(f"{language}-{tokenizer}")
            if language == "english":
                run = _train(workdir, tokenizer, "prose.txt", PROSE, *TOKENIZER_OPTIONS[tokenizer])
            else:
                run = _train(workdir, tokenizer, "chinese.txt", CHINESE)
            runs[tokenizer, language] = run
        return runs[tokenizer, language]

    return get


@pytest.fixture(params=TOKENIZERS)
def english_run(request: pytest.FixtureRequest, train_once: Callable[..., TrainedRun]) -> TrainedRun:
    return train_once(request.param)


@pytest.fixture
def char_run(train_once: Callable[..., TrainedRun]) -> TrainedRun:
    return train_once("char")


# --- train, sample, evaluate, info: the happy path ----------------------------------------------


def test_train_prints_the_checkpoint_and_the_sample_command_to_try_next(english_run: TrainedRun) -> None:
    stdout = english_run.result.stdout
    assert "Traceback" not in english_run.result.output
    assert english_run.result.stderr == ""
    assert "training on cpu" in stdout
    assert re.search(rf"checkpoint\s+│ {re.escape(english_run.out_arg)}\s", stdout)
    assert f"next, try:  textgen sample {english_run.out_arg} --length 500" in stdout.splitlines()


def test_checkpoint_holds_config_weights_tokenizer_and_one_metrics_row_per_evaluation(english_run: TrainedRun) -> None:
    files = {p.name for p in english_run.checkpoint.iterdir()}
    assert files == {"config.json", "model.safetensors", TOKENIZER_FILE[english_run.tokenizer], "metrics.jsonl",
                     "trainer.safetensors"}

    config = english_run.config
    assert config["format_version"] == 1
    assert config["model"] | {"vocab_size": None} == {
        "vocab_size": None, "cell": "lstm", "layers": 1, "embedding_size": 16, "hidden_size": 32,
        "dropout": 0.0, "weight_drop": 0.0, "embedding_dropout": 0.0, "tie_weights": False, "skip_connections": True,
    }
    assert config["model"]["vocab_size"] > 1
    assert config["tokenizer"]["kind"] == english_run.tokenizer
    assert config["corpus"]["path"] == str(english_run.text_file.resolve())
    assert config["corpus"]["sha256"] == hashlib.sha256(PROSE.encode("utf-8")).hexdigest()
    assert config["corpus"]["characters"] == len(PROSE)
    assert config["training"]["steps"] == 30

    rows = [json.loads(line) for line in (english_run.checkpoint / "metrics.jsonl").read_text().splitlines()]
    printed = re.findall(r"^step\s+(\d+)\s+validation loss", english_run.result.stdout, flags=re.M)
    assert [row["step"] for row in rows] == [int(step) for step in printed]
    assert len(rows) == 5  # five evaluations spread over the run, the last at its end
    assert rows[-1]["step"] == 30
    best_row = min(rows, key=lambda row: row["val_loss"])
    assert config["best"]["step"] == best_row["step"]
    assert config["best"]["val_loss"] == best_row["val_loss"]
    assert config["best"]["val_bits_per_char"] == best_row["val_bits_per_char"]
    assert math.isclose(config["best"]["val_perplexity"], math.exp(best_row["val_loss"]), rel_tol=1e-9)


def test_sample_prints_the_prompt_then_exactly_the_asked_number_of_characters(english_run: TrainedRun) -> None:
    result = run_textgen(["sample", english_run.out_arg, "--prompt", "It was", "--length", "120", "--seed", "7"],
                         cwd=english_run.workdir)
    assert result.code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    text = result.stdout[:-1]
    assert text.startswith("It was")
    assert len(text) == len("It was") + 120


def test_sample_repeats_with_the_same_seed_and_changes_with_another(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    def sample(seed: str) -> str:
        result = cli("sample", english_run.checkpoint, "--prompt", "It was", "--length", "120", "--seed", seed)
        assert result.code == 0, result.output
        return result.stdout

    first, again, other = sample("7"), sample("7"), sample("8")
    assert first == again
    assert other != first
    assert len(other) == len(first) == len("It was") + 120 + 1


def test_num_samples_prints_that_many_samples_each_from_the_prompt(
    char_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    result = cli("sample", char_run.checkpoint, "--prompt", "It was", "--length", "40", "--seed", "3",
                 "--num-samples", "2")
    assert result.code == 0, result.output
    parts = re.split(r"^─+ sample (\d) of 2 ─+\n", result.stdout, flags=re.M)
    assert parts[0] == ""
    assert parts[1::2] == ["1", "2"]
    samples = [part[:-1] for part in parts[2::2]]
    assert all(part.endswith("\n") for part in parts[2::2])
    assert [s[:6] for s in samples] == ["It was", "It was"]
    assert [len(s) for s in samples] == [46, 46]
    assert samples[0] != samples[1]


def sample_json(cli: Callable[..., CliResult], checkpoint: Path, *options: str) -> dict:
    result = cli("sample", checkpoint, "--json", *options)
    assert result.code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stderr == ""
    return json.loads(result.stdout)


def test_sample_json_reports_samples_settings_and_the_seed_for_every_tokenizer(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    report = sample_json(cli, english_run.checkpoint, "--prompt", "It was", "--length", "90", "--num-samples", "3",
                         "--seed", "12", "--top-p", "0.95", "--temperature", "0.9")
    assert report["prompt"] == "It was" and report["seed"] == 12
    assert report["settings"] == {"length": 90, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "greedy": False,
                                  "repetition_penalty": 1.0, "stop": [], "num_samples": 3, "unknown": "error"}
    assert [len(text) for text in report["samples"]] == [90, 90, 90]  # characters, whatever the tokenizer
    # the CLI is a shell over the API: the same samples
    model = textgen.load(english_run.checkpoint, device="cpu")
    assert report["samples"] == model.generate_many("It was", 3, length=90, seed=12, top_p=0.95, temperature=0.9)


def test_sample_without_a_seed_reports_the_one_it_drew_and_that_repeats_it(
    char_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    first = sample_json(cli, char_run.checkpoint, "--length", "60")
    again = sample_json(cli, char_run.checkpoint, "--length", "60", "--seed", str(first["seed"]))
    assert again["samples"] == first["samples"]
    assert sample_json(cli, char_run.checkpoint, "--length", "60")["seed"] != first["seed"]


def test_the_first_of_four_samples_is_the_single_sample_of_the_same_seed(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    one = sample_json(cli, english_run.checkpoint, "--length", "150", "--seed", "31")["samples"]
    four = sample_json(cli, english_run.checkpoint, "--length", "150", "--seed", "31", "--num-samples", "4")["samples"]
    assert len(four) == 4 and four[0] == one[0] and len(set(four)) == 4


def test_top_k_one_is_greedy_and_top_p_one_filters_nothing(char_run: TrainedRun, cli: Callable[..., CliResult]) -> None:
    greedy = sample_json(cli, char_run.checkpoint, "--length", "80", "--greedy")["samples"]
    assert sample_json(cli, char_run.checkpoint, "--length", "80", "--top-k", "1", "--seed", "5")["samples"] == greedy
    free = sample_json(cli, char_run.checkpoint, "--length", "80", "--top-k", "0", "--seed", "5")["samples"]
    assert sample_json(cli, char_run.checkpoint, "--length", "80", "--top-k", "0", "--top-p", "1.0",
                       "--seed", "5")["samples"] == free
    assert sample_json(cli, char_run.checkpoint, "--length", "80", "--top-k", "0", "--top-p", "0.5",
                       "--seed", "5")["samples"] != free


def test_stop_ends_each_sample_before_the_first_stop_text_with_backslash_escapes(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    options = ["--prompt", "It was", "--length", "300", "--seed", "8", "--num-samples", "3"]
    whole = sample_json(cli, english_run.checkpoint, *options)["samples"]
    stopped = sample_json(cli, english_run.checkpoint, *options, "--stop", "\\n", "--stop", "the")
    assert stopped["settings"]["stop"] == ["\n", "the"]
    for text, cut in zip(whole, stopped["samples"]):
        ends = [text.index(stop) for stop in ("\n", "the") if stop in text]
        assert cut == text[: min(ends)] if ends else cut == text
    plain = cli("sample", english_run.checkpoint, *options[:-2], "--stop", "\\n")  # one sample, streamed
    first = whole[0]
    assert plain.stdout == "It was" + (first[: first.index("\n")] if "\n" in first else first) + "\n"


def test_repetition_penalty_changes_a_greedy_sample(char_run: TrainedRun, cli: Callable[..., CliResult]) -> None:
    greedy = sample_json(cli, char_run.checkpoint, "--length", "200", "--greedy")["samples"][0]
    penalized = sample_json(cli, char_run.checkpoint, "--length", "200", "--greedy",
                            "--repetition-penalty", "1.3")["samples"][0]
    assert len(penalized) == 200 and penalized != greedy


def test_unknown_symbols_can_be_skipped_or_replaced(char_run: TrainedRun, cli: Callable[..., CliResult]) -> None:
    assert_one_line_error(cli("sample", char_run.checkpoint, "--prompt", "It was 日本"),
                          "never saw", "'日'", "'本'", "--unknown skip")
    skipped = cli("sample", char_run.checkpoint, "--prompt", "It was 日本", "--unknown", "skip", "--length", "30",
                  "--seed", "2")
    assert skipped.code == 0 and skipped.stdout.startswith("It was 日本")  # the prompt is echoed as typed
    same = cli("sample", char_run.checkpoint, "--prompt", "It was ", "--length", "30", "--seed", "2")
    assert skipped.stdout[len("It was 日本"):] == same.stdout[len("It was "):]
    replaced = cli("sample", char_run.checkpoint, "--prompt", "It wäs", "--unknown", "replace", "--length", "30",
                   "--seed", "2")
    assert replaced.stdout[len("It wäs"):] == cli("sample", char_run.checkpoint, "--prompt", "It was", "--length",
                                                  "30", "--seed", "2").stdout[len("It was"):]


def test_output_writes_the_samples_to_a_file_and_only_a_note_to_the_terminal(
    char_run: TrainedRun, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    options = ["--prompt", "It was", "--length", "50", "--seed", "4", "--num-samples", "2"]
    samples = sample_json(cli, char_run.checkpoint, *options)["samples"]
    (tmp_path / "old.txt").write_text("an earlier file", encoding="utf-8")
    result = cli("sample", char_run.checkpoint, *options, "--output", "old.txt")
    assert result.code == 0 and result.stdout == "" and result.stderr == "wrote 2 samples to old.txt\n"
    assert (tmp_path / "old.txt").read_text(encoding="utf-8") == "".join(
        f"--- sample {i + 1} of 2 ---\nIt was{text}\n" for i, text in enumerate(samples))
    as_json = cli("sample", char_run.checkpoint, *options, "--output", "out.json", "--json")
    assert as_json.code == 0 and as_json.stdout == ""
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["samples"] == samples
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_samples_grow_side_by_side_in_a_terminal(char_run: TrainedRun, cli: Callable[..., CliResult]) -> None:
    import pty
    import select

    options = ["--prompt", "It was", "--length", "60", "--seed", "6", "--num-samples", "3"]
    samples = sample_json(cli, char_run.checkpoint, *options)["samples"]
    master, slave = pty.openpty()
    env = process_env(char_run.workdir / "cache", TERM="xterm", COLUMNS="120", LINES="40")
    process = subprocess.Popen([sys.executable, "-m", "textgen", "sample", char_run.out_arg, *options],
                               cwd=char_run.workdir, env=env, stdin=slave, stdout=slave, stderr=slave,
                               close_fds=True)
    os.close(slave)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the process has ended
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    screen = ANSI.sub("", output.decode("utf-8", errors="replace")).replace("\r\n", "\n")
    final = screen[screen.rindex("sample 1 ✓") :]  # the whole table, printed once the samples are done
    assert "sample 2 ✓" in final and "sample 3 ✓" in final and "seed 6" in final
    lines = screen.splitlines()
    top = max(i for i, line in enumerate(lines) if "sample 1 ✓" in line)
    header, first_row = lines[top], lines[top + 2]
    starts = [header.index(f"sample {n}") for n in (1, 2, 3)] + [len(first_row)]
    cells = [first_row[a:b].strip() for a, b in zip(starts, starts[1:])]
    for cell, text in zip(cells, samples):  # each column begins with its own sample, word-wrapped
        assert len(cell) >= 10 and ("It was" + text).startswith(cell)


def test_evaluate_json_reproduces_the_best_validation_figures(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    result = cli("evaluate", english_run.checkpoint, "--json")
    assert result.code == 0, result.output
    assert result.stdout.count("\n") == 1
    figures = json.loads(result.stdout)
    best, corpus = english_run.config["best"], english_run.config["corpus"]
    assert "held-out" in figures["text"]
    assert figures["characters"] == corpus["val_characters"] == len(PROSE) - math.floor(len(PROSE) * 0.9)
    assert math.isclose(figures["loss"], best["val_loss"], rel_tol=1e-6)
    assert math.isclose(figures["bits_per_char"], best["val_bits_per_char"], rel_tol=1e-6)
    assert math.isclose(figures["perplexity"], math.exp(figures["loss"]), rel_tol=1e-9)
    total_bits = figures["loss"] * figures["tokens"] / math.log(2)
    assert math.isclose(figures["bits_per_char"], total_bits / figures["characters"], rel_tol=1e-9)


def test_evaluate_scores_another_file_given_on_the_command_line(
    char_run: TrainedRun, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (tmp_path / "excerpt.txt").write_text(PROSE[:1000], encoding="utf-8")
    result = cli("evaluate", char_run.checkpoint, "excerpt.txt", "--json")
    assert result.code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["text"] == "excerpt.txt"
    # No context before the file's first character, so that one is not scored.
    assert figures["tokens"] == figures["characters"] == 999
    assert 0 < figures["loss"] < math.log(char_run.config["model"]["vocab_size"]) + 1
    assert math.isclose(figures["perplexity"], math.exp(figures["loss"]), rel_tol=1e-9)

    table = cli("evaluate", char_run.checkpoint, "excerpt.txt")
    assert table.code == 0, table.output
    assert f"{figures['loss']:.4f} nats/token" in table.stdout
    assert re.search(r"tokens scored\s+│ 999\b", table.stdout)


def test_evaluate_refuses_unseen_symbols_by_default_and_scores_them_when_told(
    char_run: TrainedRun, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    held_out = PROSE[:600] + " — à la carte, № 5 → 6 —"
    (tmp_path / "held-out.txt").write_text(held_out, encoding="utf-8")
    before = file_bytes(tmp_path)
    refused = cli("evaluate", char_run.checkpoint, "held-out.txt")
    assert_one_line_error(refused, "held-out.txt has", "symbols the model never saw", "'—'", "'→'",
                          "of the text", "--unknown skip or --unknown replace")
    skipped = json.loads(cli("evaluate", char_run.checkpoint, "held-out.txt", "--unknown", "skip", "--json").stdout)
    unseen = sum(c not in PROSE for c in held_out)  # the char vocabulary is every character of PROSE
    assert unseen >= 5
    assert (skipped["unseen_symbols"], skipped["unseen_handling"]) == (unseen, "skipped")
    assert skipped["characters"] == len(held_out) - unseen - 1  # the first character is not scored
    table = cli("evaluate", char_run.checkpoint, "held-out.txt", "--unknown", "replace")
    assert table.code == 0, table.output
    assert re.search(r"unseen symbols\s+│ \d+ replaced by a known stand-in", table.stdout)
    assert_one_line_error(cli("evaluate", char_run.checkpoint, "held-out.txt", "--unknown", "drop"),
                          "--unknown must be one of error, skip, replace")
    assert file_bytes(tmp_path) == before


def test_info_shows_the_model_tokenizer_corpus_and_best_figures(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    result = cli("info", english_run.checkpoint)
    assert result.code == 0, result.output
    config = english_run.config
    assert "lstm 1 x 32, embedding 16, dropout 0, skip connections" in result.stdout
    assert f"{english_run.tokenizer}, vocabulary {config['model']['vocab_size']:,}" in result.stdout
    assert f"prose.txt ({len(PROSE):,} characters, last 0.1 held out)" in result.stdout
    assert "30 steps" in result.stdout
    best = config["best"]
    assert (f"{best['val_loss']:.4f} nats/token, {best['val_bits_per_char']:.4f} bits/char "
            f"at step {best['step']}") in result.stdout
    # the loss chart: both curves, the step axis, and the best loss as its lowest label
    assert "· training loss" in result.stdout and "• validation loss" in result.stdout
    assert re.search(r"step \d+\s+30\n", result.stdout)
    assert "┤" in result.stdout and "●" in result.stdout


@pytest.mark.parametrize("tokenizer", ["char", "word"])
def test_chinese_text_trains_and_continues_a_chinese_prompt(
    tokenizer: str, train_once: Callable[..., TrainedRun], cli: Callable[..., CliResult]
) -> None:
    run = train_once(tokenizer, "chinese")
    assert f"next, try:  textgen sample {run.out_arg} --length 500" in run.result.stdout.splitlines()
    result = cli("sample", run.checkpoint, "--prompt", "我们的", "--length", "40", "--seed", "1")
    assert result.code == 0, result.output
    text = result.stdout[:-1]
    assert text.startswith("我们的") and len(text) == 3 + 40
    continuation = text[3:]
    assert set(continuation) <= set(CHINESE)  # every character is one the model learnt
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in continuation) >= 10


def test_a_latin1_file_is_refused_as_utf8_and_trains_with_encoding_latin1(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    text = PROSE.replace("Mr. Bennet", "Mr. Bénet") + "Café, naïve, à la carte.\n"
    (tmp_path / "latin.txt").write_bytes(text.encode("latin-1"))
    first_bad = text.encode("latin-1").index(b"\xe9")
    assert_one_line_error(cli("train", "latin.txt"), "latin.txt", "not valid UTF-8", "0xe9",
                          f"byte offset {first_bad}", "--encoding")

    trained = cli("train", "latin.txt", "--encoding", "latin-1", "--out", "ck", *TINY, "--max-steps", "5")
    assert trained.code == 0, trained.output
    sample = cli("sample", "ck", "--prompt", "Café", "--length", "20", "--seed", "1")
    assert sample.code == 0 and sample.stdout.startswith("Café")
    held_out = cli("evaluate", "ck", "--json")  # re-read in latin-1, as it was trained
    assert held_out.code == 0, held_out.output
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    assert math.isclose(json.loads(held_out.stdout)["loss"], config["best"]["val_loss"], rel_tol=1e-6)


@pytest.mark.parametrize("options, skip_connections", [
    ([], True), (["--no-skip-connections"], False), (["--tie-weights", "--hidden-size", "16"], False),
])
def test_skip_connections_are_on_unless_turned_off_or_weights_are_tied(
    cli: Callable[..., CliResult], tmp_path: Path, options: list[str], skip_connections: bool
) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    trained = cli("train", "prose.txt", "--out", "ck", *TINY, *options, "--max-steps", "3")
    assert trained.code == 0, trained.output
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["skip_connections"] is skip_connections
    assert cli("sample", "ck", "--length", "20", "--seed", "1").code == 0


def test_awd_regularisers_train_are_recorded_and_resume(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    options = [*TINY, "--layers", "2", "--weight-drop", "0.25", "--embedding-dropout", "0.1",
               "--activation-penalty", "2", "--activation-change-penalty", "1"]
    trained = cli("train", "prose.txt", "--out", "ck", *options, "--max-steps", "4")
    assert trained.code == 0, trained.output

    def recorded() -> tuple[float, ...]:
        config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
        return (config["model"]["weight_drop"], config["model"]["embedding_dropout"],
                config["training"]["activation_penalty"], config["training"]["activation_change_penalty"])

    assert recorded() == (0.25, 0.1, 2.0, 1.0)
    resumed = cli("train", "prose.txt", "--resume", "ck", "--max-steps", "6")
    assert resumed.code == 0, resumed.output
    assert recorded() == (0.25, 0.1, 2.0, 1.0)
    assert cli("sample", "ck", "--length", "20", "--seed", "1").code == 0
    shown = cli("info", "ck")
    assert "regularisers" in shown.stdout
    for regulariser in ("weight decay 0.1", "weight drop 0.25", "embedding dropout 0.1", "AR 2", "TAR 1"):
        assert regulariser in shown.stdout, shown.stdout


@pytest.mark.parametrize("option, value", [("--activation-penalty", "-1"), ("--activation-change-penalty", "inf")])
def test_an_activation_penalty_out_of_range_is_one_line(cli: Callable[..., CliResult], tmp_path: Path, option: str,
                                                        value: str) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    result = cli("train", "prose.txt", "--out", "ck", option, value, "--max-steps", "2")
    assert result.code == 2
    assert result.stderr == f"error: {option} must be 0 (off) or more, and finite\n"
    assert not (tmp_path / "ck").exists()


# --- the command surface ------------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_textgen(["--help"], cwd=tmp_path)
    assert result.code == 0 and result.stderr == ""
    assert "Usage: textgen" in result.stdout
    for command in ("train", "sample", "evaluate", "info"):
        assert re.search(rf"│ {command}\s", result.stdout), command


def test_train_help_lists_its_options(tmp_path: Path) -> None:
    result = run_textgen(["train", "--help"], cwd=tmp_path)
    assert result.code == 0 and result.stderr == ""
    for option in ("--out", "--overwrite", "--encoding", "--val-fraction", "--tokenizer", "--vocab-size",
                   "--cell", "--layers", "--hidden-size", "--embedding-size", "--dropout", "--tie-weights",
                   "--skip-connections", "--weight-drop", "--embedding-dropout",
                   "--seq-len", "--batch-size", "--learning-rate", "--seed", "--max-steps", "--epochs",
                   "--max-time"):
        assert re.search(rf"{option}\b", result.stdout), option


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_textgen(["--version"], cwd=tmp_path)
    assert (result.code, result.stdout, result.stderr) == (0, f"textgen {textgen.__version__}\n", "")


def test_console_script_reports_errors_like_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("textgen")
    if not script.is_file():
        pytest.skip("no textgen console script beside this Python")
    completed = subprocess.run([str(script), "info", "no-such-checkpoint"], cwd=tmp_path, capture_output=True,
                               text=True, env=process_env(tmp_path / "cache"), stdin=subprocess.DEVNULL, timeout=300)
    assert_one_line_error(CliResult(completed.returncode, completed.stdout, completed.stderr),
                          "no such checkpoint: no-such-checkpoint")


def test_bare_textgen_shows_help_without_an_empty_error_line(tmp_path: Path) -> None:
    result = run_textgen([], cwd=tmp_path)
    assert "Usage: textgen" in result.stdout
    assert not re.search(r"error:\s*\(", result.stderr), result.stderr


# --- bad input: one line on stderr, exit 2, no traceback -------------------------------------------


def make_bad_inputs(directory: Path, checkpoint: Path) -> None:
    """Every broken file and folder the error cases below refer to, by name, in `directory`."""
    (directory / "prose.txt").write_text(PROSE, encoding="utf-8")
    (directory / "empty.txt").write_bytes(b"")
    (directory / "blank.txt").write_text(" \n\n\t \n", encoding="utf-8")
    (directory / "archive.zip").write_bytes(b"PK\x03\x04\x00\x00\x08\x00" + bytes(range(256)))
    (directory / "latin.txt").write_bytes("A naïve café.\n".encode("latin-1") * 20)
    (directory / "short.txt").write_text("To be, or not.\n", encoding="utf-8")
    (directory / "unseen.txt").write_text("Zoe paid 5 EUR in Zurich.\n", encoding="utf-8")
    (directory / "notes").mkdir()
    (directory / "notes" / "todo.txt").write_text("buy milk\n", encoding="utf-8")
    (directory / "pictures").mkdir()
    (directory / "pictures" / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    shutil.copytree(checkpoint, directory / "garbage-weights")
    (directory / "garbage-weights" / "model.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    shutil.copytree(checkpoint, directory / "foreign-config")
    (directory / "foreign-config" / "config.json").write_text(
        json.dumps({"architectures": ["BertModel"], "hidden_size": 768}), encoding="utf-8")
    shutil.copytree(checkpoint, directory / "torn-config")
    (directory / "torn-config" / "config.json").write_text('{"format": "textgen-checkpoint", "form',
                                                             encoding="utf-8")


CK = "{checkpoint}"  # replaced by the module's char checkpoint
BAD_INPUTS = [
    ("missing-file", ["train", "missing.txt"], ["no such file or known corpus: missing.txt"]),
    ("folder-of-too-little", ["train", "notes"], ["shorter than one training window"]),
    ("folder-without-text", ["train", "pictures"], ["pictures holds no text files"]),
    ("empty-file", ["train", "empty.txt"], ["empty.txt is empty"]),
    ("blank-file", ["train", "blank.txt"], ["blank.txt is empty"]),
    ("binary-file", ["train", "archive.zip"], ["archive.zip looks binary", "offset 4"]),
    ("not-utf8", ["train", "latin.txt"], ["latin.txt is not valid UTF-8", "0xef", "byte offset 4", "--encoding"]),
    ("shorter-than-a-window", ["train", "short.txt", *TINY, "--max-steps", "5"],
     ["shorter than one training window", "--seq-len 16"]),
    ("unknown-corpus", ["train", "gutenberg"], ["gutenberg", "python-docs, shakespeare"]),
    ("unknown-encoding", ["train", "prose.txt", "--encoding", "klingon"], ["unknown encoding: klingon"]),
    ("val-fraction", ["train", "prose.txt", "--val-fraction", "0.9"], ["--val-fraction", "0.5"]),
    ("dropout", ["train", "prose.txt", "--dropout", "1.5"], ["--dropout", "1.5"]),
    ("weight-drop", ["train", "prose.txt", "--weight-drop", "1"], ["--weight-drop must be in [0, 1), got 1.0"]),
    ("embedding-dropout", ["train", "prose.txt", "--embedding-dropout", "-0.1"], ["--embedding-dropout", "-0.1"]),
    ("layers", ["train", "prose.txt", "--layers", "0"], ["--layers", "at least 1"]),
    ("tokenizer", ["train", "prose.txt", "--tokenizer", "nonsense"],
     ["--tokenizer", "char, word, subword", "nonsense"]),
    ("cell", ["train", "prose.txt", "--cell", "nonsense"], ["--cell", "lstm, gru", "nonsense"]),
    ("tie-weights", ["train", "prose.txt", "--tie-weights", "--hidden-size", "32", "--embedding-size", "16"],
     ["--tie-weights needs the embedding size equal to the hidden size (got 16 and 32)"]),
    ("tie-weights-skip", ["train", "prose.txt", "--tie-weights", "--skip-connections", "--hidden-size", "16",
                          "--embedding-size", "16"], ["--tie-weights cannot be combined with skip connections"]),
    ("max-time", ["train", "prose.txt", "--max-time", "-1"], ["--max-time", "greater than 0"]),
    ("temperature", ["sample", CK, "--temperature", "0"], ["--temperature", "greater than 0"]),
    ("top-k", ["sample", CK, "--top-k", "-1"], ["--top-k", "-1"]),
    ("length", ["sample", CK, "--length", "0"], ["--length", "at least 1"]),
    ("num-samples", ["sample", CK, "--num-samples", "0"], ["--num-samples", "at least 1"]),
    ("length-not-a-number", ["sample", CK, "--length", "abc"], ["--length", "integer", "textgen sample --help"]),
    ("unknown-option", ["sample", CK, "--colour", "red"], ["--colour", "textgen sample --help"]),
    ("unseen-symbols", ["sample", CK, "--prompt", "日本 It was"], ["never saw", "'日'", "'本'"]),
    ("sample-no-checkpoint", ["sample", "nowhere"], ["no such checkpoint: nowhere"]),
    ("sample-not-a-checkpoint", ["sample", "notes"], ["notes is not a textgen checkpoint", "config.json"]),
    ("evaluate-not-a-checkpoint", ["evaluate", "notes"], ["notes is not a textgen checkpoint"]),
    ("info-not-a-checkpoint", ["info", "notes"], ["notes is not a textgen checkpoint"]),
    ("info-a-file", ["info", "prose.txt"], ["prose.txt is a file"]),
    ("sample-garbage-weights", ["sample", "garbage-weights"], ["garbage-weights/model.safetensors is corrupt"]),
    ("evaluate-garbage-weights", ["evaluate", "garbage-weights"], ["garbage-weights/model.safetensors is corrupt"]),
    ("info-garbage-weights", ["info", "garbage-weights"], ["garbage-weights/model.safetensors is corrupt"]),
    ("sample-foreign-config", ["sample", "foreign-config"], ["foreign-config is not a textgen checkpoint"]),
    ("evaluate-foreign-config", ["evaluate", "foreign-config"], ["foreign-config is not a textgen checkpoint"]),
    ("info-foreign-config", ["info", "foreign-config"], ["foreign-config is not a textgen checkpoint"]),
    ("torn-config", ["info", "torn-config"], ["torn-config/config.json is corrupt"]),
    ("evaluate-missing-file", ["evaluate", CK, "missing.txt"], ["no such file: missing.txt"]),
    ("evaluate-binary-file", ["evaluate", CK, "archive.zip"], ["archive.zip looks binary", "offset 4"]),
    ("evaluate-unseen-characters", ["evaluate", CK, "unseen.txt"], ["never saw", "'Z'", "'5'"]),
    ("train-seed-too-large", ["train", "prose.txt", "--seed", str(2**80)], ["--seed", "between 0 and"]),
    ("sample-seed-too-large", ["sample", CK, "--seed", str(2**80)], ["--seed", "between 0 and"]),
    ("top-p", ["sample", CK, "--top-p", "1.5"], ["--top-p", "at most 1", "1.5"]),
    ("top-p-zero", ["sample", CK, "--top-p", "0"], ["--top-p", "greater than 0"]),
    ("repetition-penalty", ["sample", CK, "--repetition-penalty", "0.5"], ["--repetition-penalty", "at least 1"]),
    ("temperature-inf", ["sample", CK, "--temperature", "inf"], ["--temperature", "finite"]),
    ("stop-empty", ["sample", CK, "--stop", ""], ["--stop", "non-empty"]),
    ("unknown-policy", ["sample", CK, "--unknown", "ignore"], ["--unknown", "error, skip, replace", "ignore"]),
    ("num-samples-huge", ["sample", CK, "--num-samples", "5000"], ["--num-samples", "at most 1000"]),
    ("output-a-folder", ["sample", CK, "--output", "notes"], ["--output notes is a folder"]),
    ("output-no-folder", ["sample", CK, "--output", "missing/out.txt"], ["there is no folder missing"]),
    ("interactive-json", ["sample", CK, "--interactive", "--json"], ["--interactive", "--json"]),
    ("vocab-size", ["train", "prose.txt", "--tokenizer", "subword", "--vocab-size", "0"], ["--vocab-size must be at least 260, got 0"]),
    ("hidden-size-typo", ["train", "prose.txt", "--hidden-size", "100000000000"], ["--hidden-size", "at most"]),
    ("out-below-a-file", ["train", "prose.txt", "--out", "prose.txt/model"], ["prose.txt is a file"]),
    ("unknown-home", ["train", "~nosuchuser-textgen/x.txt"], ["no such file or known corpus"]),
]


@pytest.mark.parametrize("args, fragments", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_one_error_line_and_exit_2(
    args: list[str], fragments: list[str], char_run: TrainedRun, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    make_bad_inputs(tmp_path, char_run.checkpoint)
    result = cli(*(str(char_run.checkpoint) if a == CK else a for a in args))
    assert_one_line_error(result, *fragments)


REAL_PROCESS_CASES = ["not-utf8", "binary-file", "length-not-a-number", "unseen-symbols", "evaluate-garbage-weights",
                      "top-p", "output-a-folder"]


@pytest.mark.parametrize("case", REAL_PROCESS_CASES)
def test_bad_input_in_a_real_process_gives_one_error_line_and_exit_2(
    case: str, char_run: TrainedRun, tmp_path: Path
) -> None:
    _, args, fragments = next(c for c in BAD_INPUTS if c[0] == case)
    make_bad_inputs(tmp_path, char_run.checkpoint)
    result = run_textgen([str(char_run.checkpoint) if a == CK else a for a in args], cwd=tmp_path)
    assert_one_line_error(result, *fragments)


def test_evaluate_without_file_asks_for_one_once_the_training_text_changed_or_went(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    text_file = tmp_path / "prose.txt"
    text_file.write_text(PROSE, encoding="utf-8")
    assert cli("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3").code == 0

    text_file.write_text(PROSE + "A line added after training.\n", encoding="utf-8")
    assert_one_line_error(cli("evaluate", "ck"), "prose.txt", "changed since training", "give a FILE")

    text_file.unlink()
    assert_one_line_error(cli("evaluate", "ck", "--json"), "prose.txt", "can no longer be read", "give a FILE")

    (tmp_path / "copy.txt").write_text(PROSE, encoding="utf-8")
    assert cli("evaluate", "ck", "copy.txt", "--json").code == 0


def test_evaluate_without_file_asks_for_one_when_nothing_was_held_out(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    trained = cli("train", "prose.txt", "--out", "ck", "--val-fraction", "0", *TINY, "--max-steps", "3")
    assert trained.code == 0, trained.output
    assert_one_line_error(cli("evaluate", "ck"), "--val-fraction 0", "give a FILE")
    assert cli("evaluate", "ck", "prose.txt", "--json").code == 0


# --- where checkpoints go --------------------------------------------------------------------------


def make_prose_and_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "thesis.tex").write_text("\\section{Results}\n", encoding="utf-8")


def test_out_on_a_folder_of_other_files_is_refused_and_the_files_are_untouched(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    make_prose_and_a_folder_of_other_files(tmp_path)
    before = file_bytes(tmp_path / "results")
    result = cli("train", "prose.txt", "--out", "results", *TINY, "--max-steps", "5")
    assert_one_line_error(result, "results", "not a textgen checkpoint")
    assert file_bytes(tmp_path / "results") == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".results")) == []


def test_out_on_a_folder_of_other_files_is_refused_before_training_starts(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    make_prose_and_a_folder_of_other_files(tmp_path)
    result = cli("train", "prose.txt", "--out", "results", *TINY, "--max-steps", "5")
    assert result.code == 2
    assert "training on" not in result.stdout


def test_out_on_an_existing_checkpoint_needs_overwrite(
    char_run: TrainedRun, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    shutil.copytree(char_run.checkpoint, tmp_path / "ck")
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    before = file_bytes(tmp_path / "ck")
    refused = cli("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3", "--seed", "99")
    assert_one_line_error(refused, "ck already holds a checkpoint", "--overwrite")
    assert file_bytes(tmp_path / "ck") == before

    replaced = cli("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3", "--seed", "99", "--overwrite")
    assert replaced.code == 0, replaced.output
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    assert (config["training"]["seed"], config["training"]["steps"]) == (99, 3)


def test_default_out_puts_a_second_run_on_the_same_corpus_in_a_new_folder(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    first = cli("train", "prose.txt", *TINY, "--max-steps", "2")
    assert first.code == 0, first.output
    assert "next, try:  textgen sample checkpoints/prose --length 500" in first.stdout.splitlines()
    before = file_bytes(tmp_path / "checkpoints" / "prose")

    second = cli("train", "prose.txt", *TINY, "--max-steps", "2", "--seed", "2")
    assert second.code == 0, second.output
    assert "next, try:  textgen sample checkpoints/prose-2 --length 500" in second.stdout.splitlines()
    assert file_bytes(tmp_path / "checkpoints" / "prose") == before
    assert (tmp_path / "checkpoints" / "prose-2" / "model.safetensors").is_file()
    second_config = json.loads((tmp_path / "checkpoints" / "prose-2" / "config.json").read_text(encoding="utf-8"))
    assert second_config["training"]["seed"] == 2


def test_the_suggested_command_stays_on_one_line_for_a_long_checkpoint_path(tmp_path: Path) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    out = tmp_path / "experiments-with-recurrent-models" / "a-checkpoint-folder-with-a-long-name"
    result = run_textgen(["train", "prose.txt", "--out", str(out), *TINY, "--max-steps", "1"], cwd=tmp_path,
                         COLUMNS="80")
    assert result.code == 0, result.output
    assert f"next, try:  textgen sample {shlex.quote(str(out))} --length 500" in result.stdout.splitlines()


# --- interruption ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_stops_training_saves_a_loadable_checkpoint_and_exits_130(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    (tmp_path / "long.txt").write_text(PROSE * 100, encoding="utf-8")  # about 370 KB
    args = ["train", "long.txt", "--out", "ck", *TINY, "--max-time", "60"]
    with TrainingProcess(args, tmp_path, process_env(tmp_path / "cache")) as run:
        run.wait_for_training()
        time.sleep(2)
        code = run.stop(signal.SIGINT)
    stdout, stderr = run.stdout, run.stderr

    assert code == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert "stopping after this step and saving" in stdout
    assert re.search(r"stopped by\s+│ interrupted", stdout)
    assert "continue it with:  textgen train --resume ck" in stdout
    assert {"config.json", "model.safetensors", "trainer.safetensors"} <= {p.name for p in (tmp_path / "ck").iterdir()}
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    steps = config["training"]["steps"]
    assert 1 <= steps
    figures = cli("evaluate", "ck", "--json")
    assert figures.code == 0, figures.output
    assert math.isclose(json.loads(figures.stdout)["loss"], config["best"]["val_loss"], rel_tol=1e-6)

    resumed = cli("train", "--resume", "ck", "--max-steps", steps + 5)
    assert resumed.code == 0, resumed.output
    assert f"resuming at step {steps:,}" in resumed.stdout
    assert re.search(r"stopped by\s+│ max-steps", resumed.stdout)
    assert json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))["training"]["steps"] == steps + 5


def test_documents_mode_trains_on_lines_and_samples_whole_documents(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    names = [word for word in sorted(set(re.findall(r"[a-z]+", PROSE.lower()))) if len(word) > 2]
    (tmp_path / "names.txt").write_text("\n".join(names * 3) + "\n", encoding="utf-8")
    trained = cli("train", "names.txt", "--out", "names", "--documents", "lines", *TINY, "--max-steps", "40")
    assert trained.code == 0, trained.output
    assert re.search(r"\d+ training and \d+ validation documents \(lines\)", trained.stdout)
    config = json.loads((tmp_path / "names" / "config.json").read_text(encoding="utf-8"))
    assert config["tokenizer"]["documents"] == "lines" and config["corpus"]["documents"] == "lines"
    info = cli("info", "names")
    assert "one document per line" in info.stdout

    listed = cli("sample", "names", "--num-samples", "6", "--seed", "5", "--length", "40")
    assert listed.code == 0, listed.output
    lines = listed.stdout.split("\n")
    assert len(lines) == 7 and lines[-1] == ""  # six documents, one per line, in order
    as_json = json.loads(cli("sample", "names", "--num-samples", "6", "--seed", "5", "--length", "40", "--json").stdout)
    assert as_json["samples"] == lines[:-1]
    assert all("\n" not in sample and len(sample) <= 40 for sample in as_json["samples"])
    first = json.loads(cli("sample", "names", "--seed", "5", "--length", "40", "--json").stdout)["samples"]
    assert first == as_json["samples"][:1]  # the same first document whatever the batch

    prompted = json.loads(cli("sample", "names", "--prompt", "th", "--num-samples", "3", "--seed", "1", "--json").stdout)
    assert len(prompted["samples"]) == 3
    evaluated = cli("evaluate", "names", "--json")
    assert evaluated.code == 0, evaluated.output
    assert math.isclose(json.loads(evaluated.stdout)["loss"], config["best"]["val_loss"], rel_tol=1e-6)
    assert_one_line_error(cli("train", "names.txt", "--documents", "sentences"),
                          "--documents must be one of none, lines, blank-lines")


def test_resume_refuses_settings_that_would_change_the_run(char_run: TrainedRun, cli: Callable[..., CliResult]) -> None:
    before = file_bytes(char_run.checkpoint)
    result = cli("train", "--resume", char_run.checkpoint, "--hidden-size", "64", "--seq-len", "8")
    assert_one_line_error(result, "--hidden-size, --seq-len cannot change when resuming")
    assert_one_line_error(cli("train", "--resume", "no-such-checkpoint"), "no such checkpoint: no-such-checkpoint")
    assert_one_line_error(cli("train", "--resume", char_run.checkpoint, "--max-steps", "0"), "--max-steps must be at least 1")
    assert file_bytes(char_run.checkpoint) == before


def test_a_time_budget_alone_picks_a_preset_and_says_so(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    result = cli("train", "prose.txt", "--out", "auto", "--max-time", "1")
    assert result.code == 0, result.output
    assert re.search(r"preset tiny \(1 s at [\d,]+ tokens/s measured here \(the small shape\) buy about "
                     r"[\d.]+M tokens; --preset to choose\)", " ".join(result.stdout.split()))
    config = json.loads((tmp_path / "auto" / "config.json").read_text(encoding="utf-8"))
    assert (config["model"]["hidden_size"], config["training"]["preset"]) == (256, "tiny")

    own_shape = cli("train", "prose.txt", "--out", "own", "--max-time", "1", *TINY)
    assert own_shape.code == 0, own_shape.output
    assert "preset" not in own_shape.stdout
    assert json.loads((tmp_path / "own" / "config.json").read_text(encoding="utf-8"))["training"]["preset"] is None

    named = cli("train", "prose.txt", "--out", "named", "--max-steps", "2", "--preset", "medium", "--hidden-size", "40")
    assert named.code == 0, named.output
    assert "preset medium (as asked)" in named.stdout
    config = json.loads((tmp_path / "named" / "config.json").read_text(encoding="utf-8"))
    assert (config["model"]["hidden_size"], config["model"]["dropout"]) == (40, PRESET_DROPOUT["medium"])
    assert_one_line_error(cli("train", "prose.txt", "--preset", "huge"), "--preset must be one of tiny, small, medium")


@pytest.fixture(scope="module")
def interrupted_sample(train_once: Callable[..., TrainedRun]) -> CliResult:
    """A very long `textgen sample` stopped by SIGINT once it has started writing."""
    run = train_once("char")
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "sample", run.out_arg, "--prompt", "It was", "--length", "10000000",
         "--seed", "1"],
        cwd=run.workdir, env=process_env(run.workdir / "cache"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    chunks = [process.stdout.read(6)]  # the prompt: the model is loaded and sampling has begun
    reader = threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True)
    reader.start()
    try:
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    stderr = process.stderr.read().decode("utf-8")
    process.stderr.close()
    return CliResult(code, b"".join(chunks).decode("utf-8", errors="replace"), stderr)


def test_ctrl_c_during_sampling_exits_130_without_a_traceback(interrupted_sample: CliResult) -> None:
    assert interrupted_sample.code == 130
    assert interrupted_sample.stdout.startswith("It was")
    assert "Traceback" not in interrupted_sample.output


def test_ctrl_c_during_sampling_says_interrupted_on_stderr(interrupted_sample: CliResult) -> None:
    assert interrupted_sample.stderr == "error: interrupted\n"


# --- the shakespeare corpus, downloaded from a local mirror -------------------------------------


@pytest.fixture
def shakespeare_mirror() -> Iterator[tuple[str, list[str]]]:
    """A web server on 127.0.0.1 serving tiny Shakespeare; yields its url and the paths requested."""
    if not SHARED_SHAKESPEARE.is_file():
        pytest.skip(f"{SHARED_SHAKESPEARE} is not here")
    data = SHARED_SHAKESPEARE.read_bytes()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/input.txt", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_shakespeare_downloads_once_from_the_mirror_then_trains_from_the_cache(
    shakespeare_mirror: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, requests = shakespeare_mirror
    first = run_textgen(["train", "shakespeare", "--out", "ck", *TINY, "--max-steps", "5"], cwd=tmp_path,
                        TEXTGEN_SHAKESPEARE_URL=url)
    assert first.code == 0, first.output
    assert requests == ["/input.txt"]
    cached = tmp_path / "cache" / "corpora" / "shakespeare.txt"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert 'next, try:  textgen sample ck --prompt "ROMEO:" --length 500' in first.stdout.splitlines()
    config = json.loads((tmp_path / "ck" / "config.json").read_text(encoding="utf-8"))
    assert (config["corpus"]["name"], config["corpus"]["characters"]) == ("shakespeare", 1_115_394)

    second = run_textgen(["train", "shakespeare", "--out", "ck2", *TINY, "--max-steps", "1"], cwd=tmp_path,
                         TEXTGEN_SHAKESPEARE_URL=url)
    assert second.code == 0, second.output
    assert requests == ["/input.txt"]  # the second run read the cache
