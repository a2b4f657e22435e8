"""Tests for fine-tuning (`textgen train --init-from`, `api.train(init_from=...)`): the shape and
tokenizer come from the base, the vocabulary grows after the base's own ids, new rows leave the
base's own text scored as it was, the lineage is recorded and shown, a fine-tuning run resumes
exactly, and every bad base or option is one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from cli_support import assert_one_line_error, file_bytes, run_in_this_process
from conftest import PROSE
from test_resume import LossRecorder
from textgen import api
from textgen.checkpoint import read_info, read_metrics
from textgen.config import (
    FINE_TUNING_EVAL_EVERY, FINE_TUNING_LEARNING_RATE_RATIO, FINE_TUNING_WARMUP_STEPS, BaseSettings, ModelConfig,
    OptionError, TokenizerConfig, TrainConfig, fine_tuning_settings,
)
from textgen.model import RNNLanguageModel
from textgen.render.tables import info_table
from textgen.tokenizers import build_tokenizer, end_marker, grown_tokenizer, origins
from textgen.training.fine_tuning import Base, start_from

# A text the base never saw: accents, a tilde, and words of its own.
NEW_TEXT = ("Über the café wall the nightjar sang ~ again, and again, and the quiet harbour "
            "slept; the nightjar sang of the café and of the harbour.\n") * 12
QUICK = {"max_steps": 6, "batch_size": 4, "seq_len": 16, "device": "cpu", "precision": "float32"}


def vocabulary(tokenizer) -> list[str]:
    return [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]


def base_of(path: Path) -> Base:
    loaded = api.load_checkpoint(path)
    return Base(path, loaded.info, loaded.model, loaded.tokenizer, "0" * 64)


def grown_model(base: Base, tokenizer_config: TokenizerConfig, text: str):
    tokenizer = grown_tokenizer(base.tokenizer, tokenizer_config, text)
    config = ModelConfig(**{**base.info.model.__dict__, "vocab_size": tokenizer.vocab_size})
    model = RNNLanguageModel(config).eval()
    start_from(model, base, tokenizer)
    return model, tokenizer


# --- the vocabulary grows ------------------------------------------------------------------------


def test_a_char_vocabulary_adds_every_new_character_after_its_own_ids():
    base = build_tokenizer(TokenizerConfig(), PROSE)
    grown = grown_tokenizer(base, TokenizerConfig(), NEW_TEXT)
    assert vocabulary(grown)[: base.vocab_size] == vocabulary(base)
    assert vocabulary(grown)[base.vocab_size:] == sorted(set(NEW_TEXT) - set(PROSE))
    assert grown.encode(PROSE) == base.encode(PROSE)
    assert origins(base, grown) == list(range(base.vocab_size)) + [None] * (grown.vocab_size - base.vocab_size)


def test_a_word_vocabulary_adds_the_new_words_a_fresh_one_would_keep():
    config = TokenizerConfig(kind="word", min_count=2)
    base = build_tokenizer(config, PROSE)
    grown = grown_tokenizer(base, config, NEW_TEXT + "zyzzyva")
    added = vocabulary(grown)[base.vocab_size:]
    assert vocabulary(grown)[: base.vocab_size] == vocabulary(base)
    assert {"café", "nightjar", "Über"} <= set(added) and "zyzzyva" not in added  # seen once: below min_count
    assert added[0] == "nightjar" or added.index("nightjar") < added.index("Über")  # the most frequent first


def test_a_word_vocabulary_grown_past_max_vocab_is_refused_naming_the_field():
    config = TokenizerConfig(kind="word", min_count=1)
    base = build_tokenizer(config, PROSE)
    with pytest.raises(OptionError) as error:
        grown_tokenizer(base, TokenizerConfig(kind="word", min_count=1, max_vocab=base.vocab_size + 2), NEW_TEXT)
    assert error.value.field == "max_vocab" and f"the base's {base.vocab_size:,} tokens" in str(error.value)


def test_a_subword_vocabulary_is_kept_as_it_is():
    config = TokenizerConfig(kind="subword", vocab_size=300)
    base = build_tokenizer(config, PROSE * 3)
    grown = grown_tokenizer(base, config, NEW_TEXT)
    assert vocabulary(grown) == vocabulary(base) and grown.encode(NEW_TEXT) == base.encode(NEW_TEXT)


def test_switching_documents_on_adds_the_end_marker_as_the_last_new_token():
    base = build_tokenizer(TokenizerConfig(), PROSE)
    grown = grown_tokenizer(base, TokenizerConfig(documents="lines"), NEW_TEXT)
    assert end_marker(grown) == grown.vocab_size - 1
    assert origins(base, grown)[-1] is None and origins(base, grown)[: base.vocab_size] == list(range(base.vocab_size))


def test_a_base_of_documents_keeps_its_end_marker_when_its_vocabulary_grows():
    base = build_tokenizer(TokenizerConfig(documents="lines"), PROSE)
    grown = grown_tokenizer(base, TokenizerConfig(documents="lines"), NEW_TEXT)
    assert origins(base, grown)[end_marker(grown)] == end_marker(base)
    assert grown.encode(PROSE) == base.encode(PROSE)


# --- the model starts where it was ----------------------------------------------------------------


@pytest.mark.parametrize("kind, documents", [("char", "none"), ("word", "none"), ("char", "lines")])
def test_the_loss_on_the_bases_own_text_is_unchanged_at_step_0(tmp_path, make_checkpoint, kind, documents):
    base = base_of(make_checkpoint(tmp_path / "base", PROSE, kind))
    model, tokenizer = grown_model(base, TokenizerConfig(kind=kind, min_count=1, documents=documents), NEW_TEXT)
    assert tokenizer.vocab_size > base.tokenizer.vocab_size  # new tokens, whose rows must not steal probability
    ids = base.tokenizer.encode(PROSE)
    assert tokenizer.encode(PROSE) == ids
    assert stream_loss(model, ids) == pytest.approx(stream_loss(base.model, ids), abs=1e-4)


@torch.no_grad()
def stream_loss(model: RNNLanguageModel, ids: list[int]) -> float:
    """The mean cross-entropy of `ids` read as one stream from the zero state."""
    batch = torch.tensor([ids])
    logits, _ = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits[0].float(), batch[0, 1:]).item()


def test_tied_weights_grow_as_one_matrix(tmp_path):
    tokenizer = build_tokenizer(TokenizerConfig(), PROSE)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden_size=16, embedding_size=16,
                         tie_weights=True)
    base = Base(tmp_path, _info(config), RNNLanguageModel(config).eval(), tokenizer, "0" * 64)
    model, grown = grown_model(base, TokenizerConfig(), NEW_TEXT)
    assert model.decoder.weight is model.embedding.weight
    assert torch.equal(model.embedding.weight[: tokenizer.vocab_size], base.model.embedding.weight)
    ids = tokenizer.encode(PROSE)
    assert stream_loss(model, ids) == pytest.approx(stream_loss(base.model, ids), abs=1e-4)


def _info(model: ModelConfig):
    from textgen.checkpoint import CheckpointInfo

    return CheckpointInfo(model=model, tokenizer=TokenizerConfig())


# --- settings: the shape is the base's, the rate lower ------------------------------------------------


BASE = BaseSettings(ModelConfig(vocab_size=70, hidden_size=64, dropout=0.2),
                    TokenizerConfig(kind="word", max_vocab=5000), TrainConfig(learning_rate=8e-3, batch_size=16))


def test_fine_tuning_takes_the_shape_and_lowers_the_peak_rate():
    run = fine_tuning_settings({"max_time": 60}, BASE)
    assert (run.model.hidden_size, run.model.dropout, run.tokenizer.kind, run.tokenizer.max_vocab) == (64, 0.2, "word",
                                                                                                      5000)
    assert run.train.learning_rate == pytest.approx(8e-3 * FINE_TUNING_LEARNING_RATE_RATIO)
    assert (run.train.warmup_steps, run.train.batch_size, run.train.max_time, run.preset) == (
        FINE_TUNING_WARMUP_STEPS, 16, 60, None)
    assert run.train.eval_every == FINE_TUNING_EVAL_EVERY  # the best weights from before a small text is overfit
    assert fine_tuning_settings({"eval_every": 0}, BASE).train.eval_every == 0  # the user's own wins


def test_fine_tuning_may_choose_dropout_rate_batch_and_limits_anew():
    run = fine_tuning_settings({"dropout": 0.4, "learning_rate": 1e-3, "seq_len": 8, "hidden_size": 64}, BASE)
    assert (run.model.dropout, run.train.learning_rate, run.train.seq_len) == (0.4, 1e-3, 8)


@pytest.mark.parametrize("request_, field, values", [
    ({"hidden_size": 128}, "hidden_size", "is 64 in the base model, not 128"),
    ({"cell": "gru"}, "cell", "is 'lstm' in the base model, not 'gru'"),
    ({"kind": "char"}, "kind", "is 'word' in the base model, not 'char'"),
])
def test_a_shape_that_contradicts_the_base_names_the_field_and_both_values(request_, field, values):
    with pytest.raises(OptionError) as error:
        fine_tuning_settings(request_, BASE)
    assert error.value.field == field and values in str(error.value)


def test_a_preset_is_refused_since_the_shape_is_the_bases():
    with pytest.raises(OptionError) as error:
        fine_tuning_settings({}, BASE, preset="tiny")
    assert error.value.field == "preset"


def test_a_subword_base_says_its_vocabulary_options_learn_nothing_new():
    subword = BaseSettings(BASE.model, TokenizerConfig(kind="subword", vocab_size=300), BASE.train)
    run = fine_tuning_settings({"vocab_size": 4000}, subword)
    assert run.tokenizer.vocab_size == 300 and "vocab_size learns nothing new" in run.notes[0]


# --- whole runs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, docs_text) -> Path:
    folder = tmp_path_factory.mktemp("finetune")
    (folder / "base.txt").write_text(docs_text[:8000], encoding="utf-8")
    result = api.train(folder / "base.txt", folder / "base", layers=1, hidden_size=32, embedding_size=16,
                       **{**QUICK, "max_steps": 12})
    assert result.steps == 12
    return folder / "base"


def test_a_fine_tuning_run_records_its_lineage_and_leaves_its_base_alone(tmp_path, base_checkpoint):
    before = file_bytes(base_checkpoint)
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    result = api.train(tmp_path / "new.txt", tmp_path / "first", init_from=base_checkpoint, **QUICK)
    api.train(tmp_path / "new.txt", tmp_path / "second", init_from=tmp_path / "first", **QUICK)
    assert file_bytes(base_checkpoint) == before
    info = read_info(tmp_path / "second")
    digest = hashlib.sha256((tmp_path / "first" / "model.safetensors").read_bytes()).hexdigest()
    assert (info.base.path, info.base.weights_sha256, info.base.steps) == (str((tmp_path / "first").resolve()),
                                                                           digest, 6)
    assert info.base.base.path == str(base_checkpoint.resolve()) and info.base.base.base is None
    assert result.info.training.config.learning_rate == pytest.approx(
        read_info(base_checkpoint).training.config.learning_rate * FINE_TUNING_LEARNING_RATE_RATIO)
    shown = " ".join(" ".join(map(str, row)) for row in info_table(tmp_path / "second", info).rows)
    assert f"{tmp_path / 'first'} (weights sha256 {digest[:12]}, 6 steps on" in shown
    assert f"itself fine-tuned from {base_checkpoint.resolve()}" in shown


def test_the_fine_tuned_vocabulary_keeps_the_bases_ids(tmp_path, base_checkpoint):
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    api.train(tmp_path / "new.txt", tmp_path / "tuned", init_from=base_checkpoint, **QUICK)
    base, tuned = api.load(base_checkpoint, "cpu"), api.load(tmp_path / "tuned", "cpu")
    assert vocabulary(tuned.tokenizer)[: base.tokenizer.vocab_size] == vocabulary(base.tokenizer)
    assert "é" in vocabulary(tuned.tokenizer) and tuned.generate("Über", length=20, seed=1)


def test_a_fine_tuning_run_resumes_exactly_and_keeps_its_lineage(tmp_path, base_checkpoint):
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    settings = {**QUICK, "max_steps": 14, "eval_every": 5, "dropout": 0.1}
    whole = LossRecorder()
    api.train(tmp_path / "new.txt", tmp_path / "whole", callbacks=whole, init_from=base_checkpoint, **settings)
    first = LossRecorder(stop_at=7)
    stopped = api.train(tmp_path / "new.txt", tmp_path / "split", callbacks=first, init_from=base_checkpoint, **settings)
    assert (stopped.stop_reason, stopped.steps) == ("interrupted", 7)
    second = LossRecorder()
    finished = api.resume(tmp_path / "split", callbacks=second)
    assert finished.steps == 14 and first.losses + second.losses == whole.losses
    assert [r.val_loss for r in read_metrics(tmp_path / "split")] == [r.val_loss for r in read_metrics(tmp_path / "whole")]
    assert read_info(tmp_path / "split").base == read_info(tmp_path / "whole").base


@pytest.mark.parametrize("kind, documents", [("subword", "lines"), ("word", "none")])
def test_subword_and_word_models_fine_tune_with_and_without_documents(tmp_path, docs_text, kind, documents):
    (tmp_path / "base.txt").write_text(docs_text[:8000], encoding="utf-8")
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    api.train(tmp_path / "base.txt", tmp_path / "base", kind=kind, vocab_size=400, min_count=1, layers=1,
              hidden_size=32, embedding_size=16, **QUICK)
    result = api.train(tmp_path / "new.txt", tmp_path / "tuned", init_from=tmp_path / "base", documents=documents,
                       min_count=1, **QUICK)
    tuned = api.load(tmp_path / "tuned", "cpu")
    base_size = read_info(tmp_path / "base").model.vocab_size
    grows = kind == "word" or documents != "none"
    assert (tuned.tokenizer.vocab_size > base_size) == grows and result.info.tokenizer.documents == documents
    assert tuned.documents == documents


# --- the command line and its errors ----------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, base_checkpoint) -> Path:
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    os.symlink(base_checkpoint, tmp_path / "base")
    return tmp_path


def train_cli(workdir: Path, *args: str):
    return run_in_this_process(["train", "new.txt", "--out", "tuned", "--max-steps", "4", "--batch-size", "4",
                                "--device", "cpu", *args], cwd=workdir)


def test_the_command_line_fine_tunes_and_says_where_it_started(workdir):
    result = train_cli(workdir, "--init-from", "base")
    assert result.code == 0, result.output
    assert "starting from base (its best weights, after 12 steps);" in result.output.replace("\n", " ")
    assert "'é'" in result.output and read_info(workdir / "tuned").base is not None


def damage(workdir: Path, name: str, change) -> None:
    (workdir / name).mkdir()
    for path in (workdir / "base").iterdir():
        (workdir / name / path.name).write_bytes(path.read_bytes())
    change(workdir / name)


def other_version(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}), encoding="utf-8")


@pytest.mark.parametrize("args, prepare, fragments", [
    (["--init-from", "new.txt"], None, ["new.txt is a file; a checkpoint is a directory"]),
    (["--init-from", "nowhere"], None, ["no such checkpoint: nowhere"]),
    (["--init-from", "damaged"],
     lambda w: damage(w, "damaged", lambda f: (f / "model.safetensors").write_bytes(b"\0" * 40)),
     ["damaged/model.safetensors is corrupt"]),
    (["--init-from", "future"], lambda w: damage(w, "future", other_version),
     ["future has checkpoint format 99; this textgen reads format 1"]),
    (["--init-from", "base", "--hidden-size", "64"], None, ["--hidden-size is 32 in the base model, not 64"]),
    (["--init-from", "base", "--tokenizer", "word"], None, ["--tokenizer is 'char' in the base model, not 'word'"]),
    (["--init-from", "base", "--preset", "tiny"], None, ["--preset chooses a model's shape"]),
    (["--init-from", "base", "--resume", "base"], None, ["--init-from starts a new run and --resume continues one"]),
], ids=["a-file", "missing", "damaged", "other-version", "shape", "tokenizer", "preset", "resume"])
def test_a_bad_base_or_option_is_one_line_and_nothing_is_written(workdir, args, prepare, fragments):
    if prepare:
        prepare(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    result = train_cli(workdir, *args)
    assert_one_line_error(result, *fragments)
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_the_base_itself_is_refused_as_the_output(workdir):
    before = file_bytes(workdir / "base")
    result = run_in_this_process(["train", "new.txt", "--init-from", "base", "--out", "base", "--overwrite",
                                  "--max-steps", "2"], cwd=workdir)
    assert_one_line_error(result, "base is the checkpoint to start from; a fine-tuning run saves into a new --out")
    assert file_bytes(workdir / "base") == before


def test_a_word_vocabulary_grown_past_max_vocab_is_one_line(tmp_path, docs_text):
    (tmp_path / "base.txt").write_text(docs_text[:6000], encoding="utf-8")
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    api.train(tmp_path / "base.txt", tmp_path / "base", kind="word", min_count=1, layers=1, hidden_size=16,
              embedding_size=8, **{**QUICK, "max_steps": 2})
    size = read_info(tmp_path / "base").model.vocab_size
    result = run_in_this_process(["train", "new.txt", "--init-from", "base", "--out", "tuned", "--min-count", "1",
                                  "--max-vocab", str(size + 1), "--max-steps", "2"], cwd=tmp_path)
    assert_one_line_error(result, f"--max-vocab of {size + 1:,} is too small for the new text", "--min-count")
    assert not (tmp_path / "tuned").exists()


# --- torchrun -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_fine_tune_as_one(tmp_path, base_checkpoint):
    import subprocess
    import sys

    torch_distributed = pytest.importorskip("torch.distributed")
    if not torch_distributed.is_available() or not torch_distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEXTGEN_CACHE_DIR": str(tmp_path / "cache")}
    args = ["-m", "textgen", "train", "new.txt", "--init-from", str(base_checkpoint), "--max-steps", "6",
            "--eval-every", "3", "--batch-size", "4", "--seq-len", "16", "--device", "cpu", "--precision", "float32"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    for command, out in (([sys.executable], "one"), (torchrun, "two")):
        done = subprocess.run([*command, *args, "--out", out], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r.val_loss for r in two] == pytest.approx([r.val_loss for r in one], rel=1e-4)
    assert read_info(tmp_path / "two").base == read_info(tmp_path / "one").base


def test_documents_across_processes_are_refused_before_the_id_cache_is_written(tmp_path, base_checkpoint):
    from textgen.config import SettingError
    from textgen.training.distributed import Group

    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    with pytest.raises(SettingError) as error:
        api.train(tmp_path / "new.txt", tmp_path / "tuned", group=Group(rank=0, world=2), init_from=base_checkpoint,
                  documents="lines", **QUICK)
    assert error.value.fields == ("documents",) and "fine-tune in one process" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt"]
