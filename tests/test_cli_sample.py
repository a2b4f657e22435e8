"""End-to-end tests of `textgen sample`: exactly the asked length after the prompt, seeds, several
samples, --json, top-k, top-p, stop texts, the repetition penalty, unseen symbols, --output, the
side-by-side view in a terminal, and Ctrl-C while sampling. Helpers are in cli_support.py,
fixtures (`cli`, `english_run`, `char_run`, ...) in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import textgen
from cli_support import ANSI, CliResult, TrainedRun, assert_one_line_error, process_env, run_textgen

# --- the happy path -------------------------------------------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- interruption ------------------------------------------------------------------------------


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


@pytest.mark.slow
def test_ctrl_c_during_sampling_exits_130_without_a_traceback(interrupted_sample: CliResult) -> None:
    assert interrupted_sample.code == 130
    assert interrupted_sample.stdout.startswith("It was")
    assert "Traceback" not in interrupted_sample.output


@pytest.mark.slow
def test_ctrl_c_during_sampling_says_interrupted_on_stderr(interrupted_sample: CliResult) -> None:
    assert interrupted_sample.stderr == "error: interrupted\n"
