"""Tests that the library names settings by their config fields and leaves the wording to each front
end: no error raised below textgen/cli/ spells a command-line flag, and the CLI words each field
as its flag, the Python API as its keyword."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from textgen.cli.app import flag_for
from textgen.config import OptionError, SettingError
from textgen.devices import resolve_device
from textgen.training.distributed import Group

LIBRARY = Path(__file__).resolve().parent.parent / "textgen"
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def error_texts(tree: ast.AST) -> list[str]:
    """The string pieces of every error made in `tree`: whatever is raised, and every call to a
    name ending in Error (helpers that build the error a caller raises)."""
    made = [node.exc for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None]
    made += [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and (getattr(node.func, "id", None) or getattr(node.func, "attr", "")).endswith("Error")]
    pieces = {id(piece): piece for error in made for piece in ast.walk(error)
              if isinstance(piece, ast.Constant) and isinstance(piece.value, str)}  # a raised call is found twice
    return [piece.value for piece in sorted(pieces.values(), key=lambda piece: (piece.lineno, piece.col_offset))]


def flags_spelt_in(path: Path) -> list[str]:
    return [text for text in error_texts(ast.parse(path.read_text(encoding="utf-8"))) if FLAG.search(text)]


def test_no_error_below_the_cli_spells_a_flag():
    spelt = {str(path.relative_to(LIBRARY)): flags_spelt_in(path) for path in sorted(LIBRARY.rglob("*.py"))
             if path.relative_to(LIBRARY).parts[0] != "cli"}
    assert not {name: texts for name, texts in spelt.items() if texts}


def test_the_check_finds_a_flag_in_a_raised_error_and_in_one_a_helper_builds(tmp_path):
    source = tmp_path / "example.py"
    source.write_text('def f(n):\n    raise TextgenError(f"give a larger --max-steps than {n}")\n\n'
                      'def g():\n    return TextgenError("pass --encoding")\n\n'
                      'def h():\n    print("--quiet is fine in a note")\n')
    assert flags_spelt_in(source) == ["give a larger --max-steps than ", "pass --encoding"]


@pytest.mark.parametrize("make, keyword, flag", [
    (lambda: resolve_device("tpu"), "device must be auto, cpu, cuda, cuda:N or mps, not 'tpu'",
     "--device must be auto, cpu, cuda, cuda:N or mps, not 'tpu'"),
    (lambda: Group(rank=0, world=2).rows(7), "batch_size 7 does not split evenly over 2 processes; give a multiple of 2",
     "--batch-size 7 does not split evenly over 2 processes; give a multiple of 2"),
], ids=["device", "batch_size"])
def test_the_library_names_the_field_and_the_cli_words_it_as_its_flag(make, keyword, flag):
    with pytest.raises(OptionError) as error:
        make()
    assert (str(error.value), error.value.worded(flag_for)) == (keyword, flag)


def test_a_checkpoint_folder_in_the_way_names_the_out_and_overwrite_settings(tmp_path):
    from textgen.checkpoint.format import check_output_directory

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SettingError) as error:
        check_output_directory(tmp_path / "notes.txt")
    assert str(error.value).endswith("notes.txt is a file; choose another out for the checkpoint")
    assert error.value.worded(flag_for).endswith("notes.txt is a file; choose another --out for the checkpoint")
