"""Tests of `textgen serve`'s refusals before it serves anything: each a one-line error naming the
flag and exit 2, in this process (no server starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from textgen.cli.serve import parse_checkpoints, try_lines
from textgen.config import ServeConfig


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "error: serving 0.0.0.0 to the network without --api-key lets anyone there use it; "
                            "give a key, or --insecure if that is meant"),
    (["--max-queue", "0"], "error: --max-queue must be at least 1"),
    (["--port", "70000"], "error: --port must be between 1 and 65535"),
    (["--workers", "0"], "error: --workers must be at least 1"),
    (["--drain-timeout", "nan"], "error: --drain-timeout must be 0 or more seconds, and finite"),
], ids=["network-without-key", "max-queue", "port", "workers", "drain-timeout"])
def test_a_bad_option_is_one_line_naming_its_flag(cli, char_checkpoint, args, message):
    result = cli("serve", char_checkpoint, *args)
    assert (result.code, result.stderr.strip()) == (2, message)


def test_a_folder_that_is_no_checkpoint_is_refused_in_one_line(cli, tmp_path):
    result = cli("serve", tmp_path)
    assert result.code == 2 and result.stderr.strip().endswith("is not a textgen checkpoint (it has no config.json)")


def test_two_models_of_one_name_are_refused(cli, char_checkpoint):
    result = cli("serve", f"a={char_checkpoint}", f"a={char_checkpoint}")
    assert (result.code, "two checkpoints are named 'a'" in result.stderr) == (2, True)


def test_checkpoints_are_named_by_folder_or_by_name_equals_path(tmp_path):
    assert parse_checkpoints([str(tmp_path / "bard")]) == [tmp_path / "bard"]
    assert parse_checkpoints(["poet=x/y", str(tmp_path / "bard")]) == {"poet": Path("x/y"), "bard": tmp_path / "bard"}


def test_the_start_lines_give_the_address_a_curl_line_and_an_openai_line():
    lines = try_lines(ServeConfig(port=8123, api_key="k"), "bard")
    assert lines[0].startswith("serving 'bard' at http://127.0.0.1:8123")
    assert "curl http://127.0.0.1:8123/v1/completions" in lines[1] and "Bearer $TEXTGEN_API_KEY" in lines[1]
    assert 'base_url="http://127.0.0.1:8123/v1"' in lines[2] and 'model="bard"' in lines[2]
