"""End-to-end tests of what every `textgen` command shares: the command surface (help, version,
the console script) and the one-line error (exit 2, no traceback) that every bad input gives.

The many error cases call textgen.cli.main in-process (it is what the console script runs, and it
keeps torch to one import); a representative few run as real processes too. Each command's own
tests are in test_cli_train.py, test_cli_sample.py, test_cli_evaluate.py and test_cli_info.py;
what they share is in cli_support.py (texts, helpers) and conftest.py (the `cli` fixture, and one
model per tokenizer trained once for the session). Every run works in a temporary folder with its
own corpus cache, so nothing touches the repository or ~/.cache.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import textgen
from cli_support import PROSE, TINY, CliResult, TrainedRun, assert_one_line_error, process_env, run_textgen

# --- the command surface ------------------------------------------------------------------------


@pytest.mark.slow
def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_textgen(["--help"], cwd=tmp_path)
    assert result.code == 0 and result.stderr == ""
    assert "Usage: textgen" in result.stdout
    for command in ("train", "sample", "evaluate", "info"):
        assert re.search(rf"│ {command}\s", result.stdout), command


@pytest.mark.slow
def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_textgen(["--version"], cwd=tmp_path)
    assert (result.code, result.stdout, result.stderr) == (0, f"textgen {textgen.__version__}\n", "")


@pytest.mark.slow
def test_console_script_reports_errors_like_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("textgen")
    if not script.is_file():
        pytest.skip("no textgen console script beside this Python")
    completed = subprocess.run([str(script), "info", "no-such-checkpoint"], cwd=tmp_path, capture_output=True,
                               text=True, env=process_env(tmp_path / "cache"), stdin=subprocess.DEVNULL, timeout=300)
    assert_one_line_error(CliResult(completed.returncode, completed.stdout, completed.stderr),
                          "no such checkpoint: no-such-checkpoint")


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("case", REAL_PROCESS_CASES)
def test_bad_input_in_a_real_process_gives_one_error_line_and_exit_2(
    case: str, char_run: TrainedRun, tmp_path: Path
) -> None:
    _, args, fragments = next(c for c in BAD_INPUTS if c[0] == case)
    make_bad_inputs(tmp_path, char_run.checkpoint)
    result = run_textgen([str(char_run.checkpoint) if a == CK else a for a in args], cwd=tmp_path)
    assert_one_line_error(result, *fragments)
