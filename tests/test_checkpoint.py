"""Tests for textgen.checkpoint: exact round trips, one-line errors for every kind of damage,
atomic saves that survive a full disk, and weights that load without running code."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

import textgen.checkpoint.atomic
from textgen.api import load_checkpoint
from textgen.checkpoint import (
    CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, CheckpointInfo, read_info, read_metrics, save_checkpoint, update_records,
)
from textgen.checkpoint.records import BestRecord, CorpusRecord, MetricsRow, TrainingRecord
from textgen.config import ModelConfig, TokenizerConfig, TrainConfig
from textgen.errors import TextgenError
from textgen.model import RNNLanguageModel
from textgen.tokenizers import build_tokenizer

SENTENCE = "When the fog came in, the keeper rang the bell and the ships answered."
METRICS = [MetricsRow(step=10, val_loss=3.5, train_loss=3.9), MetricsRow(step=20, val_loss=3.1, train_loss=3.4)]


def build(prose: str, kind: str = "char", seed: int = 0, cell: str = "lstm", **model_kw):
    config = {"char": TokenizerConfig(kind="char"), "word": TokenizerConfig(kind="word", min_count=1),
              "subword": TokenizerConfig(kind="subword", vocab_size=300)}[kind]
    tokenizer = build_tokenizer(config, prose)
    torch.manual_seed(seed)
    shape = {"layers": 2, "hidden_size": 24, "embedding_size": 16, **model_kw}
    model = RNNLanguageModel(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, **shape)).eval()
    info = CheckpointInfo(
        model=model.config, tokenizer=config,
        corpus=CorpusRecord(source="prose", characters=len(prose)),
        training=TrainingRecord(TrainConfig(seq_len=32), steps=20),
        best=BestRecord(step=20, val_loss=3.1),
    )
    return model, tokenizer, info


def logits_of(model, tokenizer, text: str = SENTENCE) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer.encode(text)]))[0]


def one_line_error(call, *args) -> str:
    with pytest.raises(TextgenError) as err:
        call(*args)
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    return message


@pytest.fixture
def saved(tmp_path, prose):
    """A char checkpoint on disk, with the model and tokenizer that made it."""
    model, tokenizer, info = build(prose)
    out = tmp_path / "ck"
    save_checkpoint(out, model, tokenizer, info, METRICS)
    return out, model, tokenizer, info


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "word", "subword"])
def test_load_gives_identical_logits_and_token_ids(tmp_path, prose, kind):
    model, tokenizer, info = build(prose, kind)
    out = tmp_path / "ck"
    save_checkpoint(out, model, tokenizer, info, METRICS)
    loaded = load_checkpoint(out)
    assert loaded.tokenizer.kind == kind
    assert loaded.tokenizer.vocab_size == tokenizer.vocab_size
    assert loaded.tokenizer.encode(prose) == tokenizer.encode(prose)
    assert torch.equal(logits_of(loaded.model, loaded.tokenizer), logits_of(model, tokenizer))
    assert not loaded.model.training
    assert loaded.path == out
    assert loaded.info.model == model.config
    assert loaded.info.tokenizer == info.tokenizer
    assert (loaded.info.corpus, loaded.info.training, loaded.info.best) == (info.corpus, info.training, info.best)
    assert read_metrics(out) == METRICS


def test_a_checkpoint_from_before_skip_connections_loads_as_it_was_trained(tmp_path, prose):
    model, tokenizer, info = build(prose, skip_connections=False)
    save_checkpoint(tmp_path / "ck", model, tokenizer, info, [])
    config_path = tmp_path / "ck" / "config.json"
    record = json.loads(config_path.read_text())
    del record["model"]["skip_connections"]  # as textgen wrote it before the option existed
    config_path.write_text(json.dumps(record))
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.info.model.skip_connections is False
    assert torch.equal(logits_of(loaded.model, loaded.tokenizer), logits_of(model, tokenizer))


@pytest.mark.parametrize("cell", ["gru", "rnn-relu"])
def test_load_round_trips_tied_weights_and_other_cells(tmp_path, prose, cell):
    model, tokenizer, info = build(prose, cell=cell, hidden_size=16, tie_weights=True,
                                   skip_connections=False)
    save_checkpoint(tmp_path / "ck", model, tokenizer, info, [])
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.model.decoder.weight is loaded.model.embedding.weight
    assert torch.equal(logits_of(loaded.model, loaded.tokenizer), logits_of(model, tokenizer))


def test_checkpoint_holds_exactly_the_documented_files(saved):
    out, *_ = saved
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, "tokenizer.json"]
    data = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    assert data["format"] == "textgen-checkpoint" and data["format_version"] == 1
    assert [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()] == [r.to_json() for r in METRICS]
    assert sorted(p.name for p in out.parent.iterdir()) == ["ck"]  # nothing left beside it


def test_weights_are_safetensors_not_pickle_and_load_without_unpickling(saved, monkeypatch):
    out, model, tokenizer, _ = saved
    data = (out / WEIGHTS_FILE).read_bytes()
    assert not data.startswith((b"PK", b"\x80"))  # neither torch.save's zip nor a bare pickle
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    tensors = {name: spec for name, spec in header.items() if name != "__metadata__"}
    assert set(tensors) == set(model.state_dict())
    assert all(spec["dtype"] == "F32" for spec in tensors.values())
    assert tensors["embedding.weight"]["shape"] == [tokenizer.vocab_size, 16]

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle anything")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)
    loaded = load_checkpoint(out)
    assert torch.equal(logits_of(loaded.model, loaded.tokenizer), logits_of(model, tokenizer))


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_siblings(saved, prose):
    out, old_model, tokenizer, info = saved
    new_model, _, _ = build(prose, seed=1)
    save_checkpoint(out, new_model, tokenizer, info, METRICS[:1])
    loaded = load_checkpoint(out)
    assert torch.equal(logits_of(loaded.model, tokenizer), logits_of(new_model, tokenizer))
    assert not torch.equal(logits_of(loaded.model, tokenizer), logits_of(old_model, tokenizer))
    assert read_metrics(out) == METRICS[:1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["ck"]


def test_save_into_an_empty_directory_is_allowed(tmp_path, prose):
    model, tokenizer, info = build(prose)
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", model, tokenizer, info, [])
    assert read_info(tmp_path / "empty").model == model.config


def test_save_creates_missing_parent_directories(tmp_path, prose):
    model, tokenizer, info = build(prose)
    save_checkpoint(tmp_path / "runs" / "today" / "ck", model, tokenizer, info, [])
    assert load_checkpoint(tmp_path / "runs" / "today" / "ck").info.best == info.best


# --- refusing to overwrite --------------------------------------------------------------------


def test_save_refuses_a_non_empty_directory_that_is_not_a_checkpoint(tmp_path, prose):
    model, tokenizer, info = build(prose)
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.txt").write_text("It was a dark and stormy night.\n")
    (target / "figures").mkdir()
    message = one_line_error(save_checkpoint, target, model, tokenizer, info, [])
    assert str(target) in message and "not a textgen checkpoint" in message
    assert sorted(p.name for p in target.iterdir()) == ["chapter1.txt", "figures"]
    assert (target / "chapter1.txt").read_text() == "It was a dark and stormy night.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_save_refuses_to_replace_a_file(tmp_path, prose):
    model, tokenizer, info = build(prose)
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    one_line_error(save_checkpoint, target, model, tokenizer, info, [])
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- atomic save under failure ----------------------------------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def fail_on_call(number: int, real):
    """A stand-in for `real` whose `number`-th call fails as a full disk does."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            disk_full()
        return real(*args, **kwargs)

    return wrapper


def break_weights(monkeypatch, tokenizer):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)


def break_tokenizer(monkeypatch, tokenizer):
    monkeypatch.setattr(tokenizer, "save", disk_full)


def break_first_rename(monkeypatch, tokenizer):
    monkeypatch.setattr(textgen.checkpoint.atomic.os, "replace", fail_on_call(1, os.replace))


def break_second_rename(monkeypatch, tokenizer):
    monkeypatch.setattr(textgen.checkpoint.atomic.os, "replace", fail_on_call(2, os.replace))


@pytest.mark.parametrize(
    "break_save",
    [
        break_weights,
        break_tokenizer,
        break_first_rename,
        break_second_rename,
    ],
)
def test_a_failed_save_leaves_the_previous_checkpoint_whole(saved, prose, monkeypatch, break_save):
    out, old_model, tokenizer, info = saved
    new_model, _, _ = build(prose, seed=1)
    break_save(monkeypatch, tokenizer)
    message = one_line_error(save_checkpoint, out, new_model, tokenizer, info, [])
    monkeypatch.undo()
    assert "No space left on device" in message and "unchanged" in message
    assert sorted(p.name for p in out.parent.iterdir()) == ["ck"]  # no .ck.tmp or .ck.old left
    loaded = load_checkpoint(out)
    assert torch.equal(logits_of(loaded.model, tokenizer), logits_of(old_model, tokenizer))
    assert read_metrics(out) == METRICS
    # and once there is room again, the save goes through
    save_checkpoint(out, new_model, tokenizer, info, [])
    assert torch.equal(logits_of(load_checkpoint(out).model, tokenizer), logits_of(new_model, tokenizer))


def test_a_failed_first_save_leaves_nothing_behind(tmp_path, prose, monkeypatch):
    model, tokenizer, info = build(prose)
    monkeypatch.setattr(tokenizer, "save", disk_full)
    one_line_error(save_checkpoint, tmp_path / "ck", model, tokenizer, info, [])
    assert list(tmp_path.iterdir()) == []


def test_a_real_write_failure_in_the_weights_file_is_a_one_line_error(saved, prose):
    resource = pytest.importorskip("resource")
    import signal

    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("needs RLIMIT_FSIZE and SIGXFSZ")
    out, old_model, tokenizer, info = saved
    big_model, _, _ = build(prose, seed=1, hidden_size=64)  # its weights are far over the limit below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, hard))  # a file may not grow past 16 KB: EFBIG
    try:
        with pytest.raises(TextgenError) as err:
            save_checkpoint(out, big_model, tokenizer, info, [])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert "unchanged" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ck"]
    assert torch.equal(logits_of(load_checkpoint(out).model, tokenizer), logits_of(old_model, tokenizer))


def test_an_interrupted_swap_is_pointed_out_when_the_checkpoint_is_missing(saved):
    out, *_ = saved
    out.rename(out.parent / ".ck.old")  # what a crash between the two renames leaves
    message = one_line_error(read_info, out)
    assert "no such checkpoint" in message and ".ck.old" in message


# --- damaged checkpoints ----------------------------------------------------------------------


def write_config(out: Path, data) -> None:
    (out / CONFIG_FILE).write_text(json.dumps(data), encoding="utf-8")


def config_of(out: Path) -> dict:
    return json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))


def test_read_info_of_a_missing_directory(tmp_path):
    message = one_line_error(read_info, tmp_path / "nowhere")
    assert message == f"no such checkpoint: {tmp_path / 'nowhere'}"


def test_read_info_of_a_file(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")
    assert "is a file" in one_line_error(read_info, tmp_path / "model.pt")


def test_read_info_of_a_directory_without_config(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / WEIGHTS_FILE).write_bytes(b"")
    assert "has no config.json" in one_line_error(read_info, tmp_path / "ck")


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"architectures": ["BertModel"], "hidden_size": 768}, "from something else"),
        (["textgen-checkpoint", 1], "from something else"),
        ({"format": "textgen-checkpoint", "format_version": 2, "model": {}, "tokenizer": {}}, "format 2"),
        ({"format": "textgen-checkpoint", "model": {}, "tokenizer": {}}, "format None"),
        ({"format": "textgen-checkpoint", "format_version": 1, "tokenizer": {}}, "'model'"),
    ],
    ids=["foreign", "json-list", "newer-format", "no-version", "no-model"],
)
def test_read_info_rejects_configs_it_cannot_use(saved, content, expected):
    out, *_ = saved
    write_config(out, content)
    assert expected in one_line_error(read_info, out)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # a truncated write
        lambda text: "",
        lambda text: text.replace('"', "'"),
    ],
    ids=["truncated", "empty", "not-json"],
)
def test_read_info_of_corrupt_json(saved, damage):
    out, *_ = saved
    (out / CONFIG_FILE).write_text(damage((out / CONFIG_FILE).read_text()), encoding="utf-8")
    assert "is corrupt" in one_line_error(read_info, out)


def test_read_info_of_config_that_is_not_utf8(saved):
    out, *_ = saved
    (out / CONFIG_FILE).write_bytes(b'{"format": "textgen-checkpoint\xff"}')
    assert "is corrupt" in one_line_error(read_info, out)


@pytest.mark.parametrize("model", [[], "lstm", 3])
def test_read_info_of_a_model_section_that_is_not_an_object(saved, model):
    out, *_ = saved
    write_config(out, {**config_of(out), "model": model})
    assert "is corrupt" in one_line_error(read_info, out)


def test_load_of_a_model_field_of_the_wrong_type(saved):
    out, *_ = saved
    data = config_of(out)
    write_config(out, {**data, "model": {**data["model"], "layers": "two"}})
    assert "corrupt" in one_line_error(load_checkpoint, out)


def test_load_of_an_unbuildable_model_config(saved):
    out, *_ = saved
    data = config_of(out)
    write_config(out, {**data, "model": {**data["model"], "hidden_size": -5}})
    message = one_line_error(load_checkpoint, out)
    assert "is corrupt: hidden_size must be at least 1" in message


def test_load_of_a_tokenizer_that_does_not_match_the_model(saved):
    out, *_ = saved
    data = config_of(out)
    write_config(out, {**data, "model": {**data["model"], "vocab_size": data["model"]["vocab_size"] + 1}})
    assert "inconsistent" in one_line_error(load_checkpoint, out)


def test_load_without_a_tokenizer_file(saved):
    out, *_ = saved
    (out / "tokenizer.json").unlink()
    assert "missing" in one_line_error(load_checkpoint, out)


def test_load_without_weights(saved):
    out, *_ = saved
    (out / WEIGHTS_FILE).unlink()
    assert "incomplete" in one_line_error(load_checkpoint, out)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:5],
        lambda data: b"",
        lambda data: os.urandom(len(data)),
        lambda data: pickle.dumps({"embedding.weight": [0.0]}),
        lambda data: b"\xff" * 8 + data[8:],  # a header length far past the end
    ],
    ids=["half", "five-bytes", "empty", "random", "pickle", "bad-header-length"],
)
def test_load_of_damaged_weights(saved, damage):
    out, *_ = saved
    path = out / WEIGHTS_FILE
    path.write_bytes(damage(path.read_bytes()))
    message = one_line_error(load_checkpoint, out)
    assert str(path) in message and "corrupt" in message


@pytest.mark.parametrize("change", [{"hidden_size": 32}, {"layers": 1}, {"cell": "gru"}])
def test_load_of_weights_of_another_shape(saved, prose, tmp_path, change):
    out, *_ = saved
    other, tokenizer, info = build(prose, **change)
    save_checkpoint(tmp_path / "other", other, tokenizer, info, [])
    (out / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    assert "does not match" in one_line_error(load_checkpoint, out)


# --- records ------------------------------------------------------------------------------------


def test_update_records_rewrites_config_and_metrics_but_not_the_weights(saved):
    out, _, _, info = saved
    weights = (out / WEIGHTS_FILE).read_bytes()
    info.training = dataclasses.replace(info.training, steps=30)
    update_records(out, info, [*METRICS, MetricsRow(step=30, val_loss=3.3)])
    assert (out / WEIGHTS_FILE).read_bytes() == weights
    assert read_info(out).training.steps == 30
    assert [row.step for row in read_metrics(out)] == [10, 20, 30]
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, "tokenizer.json"]


def test_update_records_does_nothing_where_there_is_no_checkpoint(tmp_path, prose):
    _, _, info = build(prose)
    update_records(tmp_path / "ck", info, METRICS)
    assert list(tmp_path.iterdir()) == []


def test_read_metrics_skips_damaged_lines(saved):
    out, *_ = saved
    with open(out / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write('{"step": 30, "val_lo')
    assert read_metrics(out) == METRICS
    (out / METRICS_FILE).unlink()
    assert read_metrics(out) == []


@pytest.mark.parametrize(("section", "key", "value"), [
    ("corpus", "val_fraction", "0.1"), ("best", "val_loss", "low"), ("training", "steps", [3]),
])
def test_read_info_of_a_field_of_the_wrong_type(saved, section, key, value):
    out, *_ = saved
    data = config_of(out)
    write_config(out, {**data, section: {**(data.get(section) or {}), key: value}})
    assert "is corrupt" in one_line_error(read_info, out)
