"""End-to-end tests of `textgen evaluate`: the held-out figures a run recorded, reproduced; another
file scored; unseen symbols refused or handled as told; and the held-out text that changed, went,
or was never there. Helpers are in cli_support.py, fixtures (`cli`, `english_run`, ...) in
conftest.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from cli_support import PROSE, TINY, CliResult, TrainedRun, assert_one_line_error, file_bytes


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
