"""Tests for the one path a training run takes: `textgen train` and `textgen train --resume` are
shells over textgen.api.train and textgen.api.resume, which check the request, lock the folder,
read the text and run the loop; the library leaves the process-wide allocator setting alone."""

from __future__ import annotations

import re

from pathlib import Path

import pytest

from conftest import PROSE
from textgen import api
from textgen.cli import main
from textgen.errors import TextgenError

TINY = {"layers": 1, "hidden_size": 16, "embedding_size": 16, "seq_len": 8, "batch_size": 4}
TINY_FLAGS = ["--layers", "1", "--hidden-size", "16", "--embedding-size", "16", "--seq-len", "8", "--batch-size", "4"]


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[tuple, dict]]:
    """Record every call of textgen.api.<name>, which still does its work."""
    calls: list[tuple[tuple, dict]] = []
    real = getattr(api, name)

    def recorded(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(api, name, recorded)
    return calls


def run_cli(*args: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    assert done.value.code in (0, None)


@pytest.fixture
def prose_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    return tmp_path / "prose.txt"


def test_the_cli_trains_through_api_train_with_the_options_as_fields(prose_file, monkeypatch):
    calls = spy_on(monkeypatch, "train")
    run_cli("train", "prose.txt", "--out", "ck", *TINY_FLAGS, "--tie-weights", "--tokenizer", "char",
            "--max-steps", "3")
    [(args, kwargs)] = calls
    assert args[:4] == ("prose.txt", Path("ck"), None, "utf-8")
    assert kwargs["overwrite"] is False and kwargs["group"].world == 1
    assert {name: kwargs[name] for name in [*TINY, "tie_weights", "kind", "max_steps"]} == {
        **TINY, "tie_weights": True, "kind": "char", "max_steps": 3}
    checkpoint = api.load_checkpoint(prose_file.parent / "ck")
    assert checkpoint.info.training.steps == 3 and not checkpoint.info.model.skip_connections


def test_the_cli_resumes_through_api_resume_with_its_limits(prose_file, monkeypatch):
    api.train("prose.txt", "ck", max_steps=3, **TINY)
    calls = spy_on(monkeypatch, "resume")
    run_cli("train", "--resume", "ck", "--max-steps", "5")
    [(args, kwargs)] = calls
    assert args[:2] == (Path("ck"), None) and kwargs["max_steps"] == 5
    assert api.load_checkpoint(prose_file.parent / "ck").info.training.steps == 5


def test_the_cli_prints_the_preset_line_that_api_train_reports(prose_file, capsys):
    run_cli("train", "prose.txt", "--out", "ck", "--preset", "tiny", "--max-steps", "2", "--batch-size", "4")
    printed = capsys.readouterr().out
    assert "preset tiny (as asked)" in printed


def test_the_preset_line_names_the_cell_the_run_uses_and_info_names_the_optimiser(prose_file, capsys):
    run_cli("train", "prose.txt", "--out", "ck", "--preset", "tiny", "--cell", "gru", "--optimizer", "muon",
            "--max-steps", "2", "--batch-size", "4")
    assert "2 x 256 GRU, no dropout" in " ".join(capsys.readouterr().out.split())
    run_cli("info", "ck")
    table_text = re.sub(r"[│\s]+", " ", capsys.readouterr().out)  # the cell may wrap over rows
    assert "Muon on the recurrent matrices, AdamW on the rest" in table_text


def test_api_train_reports_the_settings_once_the_text_is_read_and_leaves_the_allocator_alone(prose_file, monkeypatch):
    import textgen.devices

    def refuse() -> bool:
        raise AssertionError("the library changed the process's allocator setting")

    monkeypatch.setattr(textgen.devices, "keep_freed_memory", refuse)
    reported = []
    result = api.train("prose.txt", "ck", preset="tiny", on_settings=lambda settings, calibration: reported.append(
        (settings.preset, settings.model.layers, calibration)), max_steps=2, batch_size=4)
    assert result.steps == 2
    assert reported == [("tiny", result.info.model.layers, None)]


def test_api_train_keeps_a_checkpoint_when_asked_not_to_overwrite(prose_file):
    api.train("prose.txt", "ck", max_steps=2, **TINY)
    with pytest.raises(TextgenError, match="already holds a checkpoint"):
        api.train("prose.txt", "ck", overwrite=False, max_steps=2, **TINY)
    assert api.train("prose.txt", "ck", max_steps=3, **TINY).steps == 3  # the library's default replaces it


def test_api_resume_refuses_settings_a_resumed_run_keeps_naming_the_fields(prose_file):
    api.train("prose.txt", "ck", max_steps=2, **TINY)
    with pytest.raises(TextgenError) as refused:
        api.resume("ck", hidden_size=32, seq_len=4)
    assert str(refused.value).startswith("hidden_size, seq_len cannot change when resuming")
    assert "--" not in str(refused.value)


def test_api_train_reports_preparing_a_folder_and_resume_finds_its_id_cache_again(prose_file, monkeypatch):
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(prose_file.parent / "cache"))
    (prose_file.parent / "texts").mkdir()
    (prose_file.parent / "texts" / "prose.txt").write_text(PROSE, encoding="utf-8")
    phases = []
    result = api.train("texts", "ck", progress=lambda phase, done, total: phases.append(phase), max_steps=2, **TINY)
    assert result.info.corpus.streamed and phases  # the folder went through the id cache, reported as it went
    assert api.resume("ck", max_steps=4).steps == 4
