"""Tests for one run per checkpoint: the training lock, its take-over after a killed run, and
readers that always see one whole checkpoint while a run saves over it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import PROSE, TrainingProcess
from textgen.checkpoint import CheckpointInfo, save_checkpoint
from textgen.checkpoint.records import TrainingRecord
from textgen.cli.app import flag_for
from textgen.api import load_checkpoint
from textgen.api import resume as api_resume
from textgen.api import train as api_train
from textgen.config import ModelConfig, TokenizerConfig
from textgen.errors import TextgenError
from textgen.checkpoint.lock import lock_file, run_lock
from textgen.model import RNNLanguageModel
from textgen.tokenizers import CharTokenizer

TINY = ["--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--seq-len", "8", "--batch-size", "4"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Holds the lock of argv[1] until its standard input closes, saying "locked" once it has it.
HOLDER = """
import sys
from textgen.checkpoint.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def hold_lock_in_another_process(checkpoint: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(checkpoint)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=environment())
    assert holder.stdout.readline().strip() == "locked"
    return holder


def textgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "textgen", *args], cwd=cwd, env=environment(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
    return done


API_TINY = dict(layers=1, hidden_size=16, embedding_size=8, seq_len=8, batch_size=4, max_steps=3, device="cpu")


# --- the lock ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_holder_in_another_process_is_refused_naming_the_first(tmp_path):
    holder = hold_lock_in_another_process(tmp_path / "ck")
    try:
        with pytest.raises(TextgenError) as error:
            with run_lock(tmp_path / "ck"):
                pass
        message = str(error.value)
        assert f"is being trained by another textgen run (process {holder.pid} on " in message
        assert message.endswith("choose another out") and "\n" not in message
        assert error.value.worded(flag_for).endswith("choose another --out")
    finally:
        holder.communicate("")
    with run_lock(tmp_path / "ck"):  # free once the holder has let go
        pass


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    holder = hold_lock_in_another_process(tmp_path / "ck")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_file(tmp_path / "ck").exists()  # SIGKILL leaves the file; the OS lock died with it
    with run_lock(tmp_path / "ck"):
        assert f"process {os.getpid()} on" in lock_file(tmp_path / "ck").read_text(encoding="utf-8")
    assert not lock_file(tmp_path / "ck").exists()


def test_the_lock_is_taken_once_even_in_one_process_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new" / "deeper" / "ck"
    with run_lock(out):
        with pytest.raises(TextgenError, match=f"is being trained by another textgen run \\(process {os.getpid()} "):
            with run_lock(out):
                pass
        assert lock_file(out).exists()  # the first holder still holds it
    assert not lock_file(out).exists()
    assert not (tmp_path / "new").exists()  # folders made for the lock and left empty are removed


@pytest.mark.slow
def test_api_train_is_refused_at_once_while_another_process_trains_into_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    holder = hold_lock_in_another_process(tmp_path / "ck")
    try:
        with pytest.raises(TextgenError, match="is being trained by another textgen run"):
            api_train("prose.txt", "ck", **API_TINY)
        # before the text is read: a text that is not there is not what the refusal is about
        with pytest.raises(TextgenError, match="is being trained by another textgen run"):
            api_train("missing.txt", "ck", **API_TINY)
        assert not (tmp_path / "ck").exists()
    finally:
        holder.communicate("")
    api_train("prose.txt", "ck", **API_TINY)
    assert (tmp_path / "ck" / "config.json").is_file()


@pytest.mark.slow
def test_api_resume_is_refused_while_another_process_trains_into_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    api_train("prose.txt", "ck", **API_TINY)
    holder = hold_lock_in_another_process(tmp_path / "ck")
    try:
        with pytest.raises(TextgenError, match="is being trained by another textgen run"):
            api_resume("ck", max_steps=5)
    finally:
        holder.communicate("")
    assert api_resume("ck", max_steps=5).steps == 5


@pytest.mark.slow
def test_two_cli_runs_on_one_out_the_second_is_refused_at_once_and_the_first_finishes(tmp_path):
    (tmp_path / "prose.txt").write_text(PROSE * 20, encoding="utf-8")
    with TrainingProcess(["train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "100000"], tmp_path,
                         environment()) as first:
        first.wait_for_training()
        second = textgen("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "2", cwd=tmp_path)
        resumed = textgen("train", "--resume", "ck", "--max-steps", "5", cwd=tmp_path)
        first_code = first.stop(signal.SIGINT)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.startswith(f"error: ck is being trained by another textgen run (process {first.pid} on ")
    assert second.stderr.count("\n") == 1
    assert resumed.returncode == 2 and "is being trained by another textgen run" in resumed.stderr
    assert first_code == 130
    assert load_checkpoint(tmp_path / "ck").info.training.steps > 0
    assert not lock_file(tmp_path / "ck").exists()


# --- readers during saves ------------------------------------------------------------------------


def test_readers_always_see_one_whole_checkpoint_while_a_run_saves_over_it(tmp_path):
    """Each save has weights filled with its own number and records that number in config.json;
    every load, taken at any moment, must agree with itself."""
    tokenizer = CharTokenizer.from_text(PROSE)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden_size=16, embedding_size=8)
    model = RNNLanguageModel(config)
    out = tmp_path / "ck"

    def save(number: int) -> None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float(number))
        info = CheckpointInfo(model=config, tokenizer=TokenizerConfig(), training=TrainingRecord(steps=number))
        save_checkpoint(out, model, tokenizer, info, [])

    save(0)
    saves_done = threading.Event()

    def keep_saving() -> None:
        for number in range(1, 60):
            save(number)
        saves_done.set()

    saver = threading.Thread(target=keep_saving)
    saver.start()
    loads = 0
    try:
        while not saves_done.is_set():
            loaded = load_checkpoint(out)
            number = loaded.info.training.steps
            assert all(torch.all(p == float(number)) for p in loaded.model.parameters()), number
            loads += 1
    finally:
        saver.join()
    assert loads > 0
    assert load_checkpoint(out).info.training.steps == 59


@pytest.mark.slow
def test_a_save_killed_between_its_renames_still_loads_and_is_put_back_by_the_next_run(tmp_path):
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    made = textgen("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    # What SIGKILL between the two renames leaves: the old checkpoint aside, the new one whole
    # in the temporary folder, nothing at the checkpoint's own path.
    os.replace(tmp_path / "ck", tmp_path / ".ck.old")
    (tmp_path / ".ck.tmp").mkdir()
    (tmp_path / ".ck.tmp" / "model.safetensors").write_bytes(b"half written")
    sampled = textgen("sample", "ck", "--length", "20", "--seed", "1", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    resumed = textgen("train", "--resume", "ck", "--max-steps", "5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "prose.txt"]
    assert load_checkpoint(tmp_path / "ck").info.training.steps == 5


@pytest.mark.slow
def test_a_new_run_without_overwrite_never_replaces_a_checkpoint_left_aside(tmp_path):
    (tmp_path / "prose.txt").write_text(PROSE, encoding="utf-8")
    assert textgen("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3", cwd=tmp_path).returncode == 0
    os.replace(tmp_path / "ck", tmp_path / ".ck.old")
    again = textgen("train", "prose.txt", "--out", "ck", *TINY, "--max-steps", "3", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a checkpoint; pass --overwrite" in again.stderr
    assert (tmp_path / "ck" / "config.json").is_file() and not (tmp_path / ".ck.old").exists()
