"""End-to-end tests of `textgen train`: what a run prints and leaves in its checkpoint, texts in
other languages and encodings, the model options a run records, where checkpoints go, resuming,
presets chosen by a time budget, Ctrl-C, and the shakespeare corpus fetched from a local mirror.
Helpers are in cli_support.py, fixtures (`cli`, `english_run`, ...) in conftest.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_support import (CHINESE, PROSE, TINY, CliResult, TrainedRun, assert_one_line_error, file_bytes,
                         process_env, run_textgen)
from conftest import TrainingProcess
from textgen.config import CHAR_NGRAM_ORDER, PRESETS

PRESET_DROPOUT = {name: preset.model["dropout"] for name, preset in PRESETS.items()}
TOKENIZER_FILE = {"char": "tokenizer.json", "word": "tokenizer.json", "subword": "tokenizer.model"}
SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# --- the happy path -------------------------------------------------------------------------------


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
        # A character model mixes in n-gram counts by default; word and subword vocabularies are too large.
        "ngram_order": CHAR_NGRAM_ORDER if english_run.tokenizer == "char" else 0,
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


@pytest.mark.slow
def test_train_help_lists_its_options(tmp_path: Path) -> None:
    result = run_textgen(["train", "--help"], cwd=tmp_path)
    assert result.code == 0 and result.stderr == ""
    for option in ("--out", "--overwrite", "--encoding", "--val-fraction", "--tokenizer", "--vocab-size",
                   "--cell", "--layers", "--hidden-size", "--embedding-size", "--dropout", "--tie-weights",
                   "--skip-connections", "--weight-drop", "--embedding-dropout",
                   "--seq-len", "--batch-size", "--learning-rate", "--seed", "--max-steps", "--epochs",
                   "--max-time"):
        assert re.search(rf"{option}\b", result.stdout), option


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


@pytest.mark.slow
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
