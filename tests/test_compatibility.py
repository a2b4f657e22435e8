"""Checkpoints written by an earlier textgen load and behave exactly as they did: the same samples
for the same seed, the same figures, and a resume that continues the same run.

tests/data/checkpoint-v1-2026-11-29 was written, and its expected outputs recorded, by textgen as
it stood before the package was split into subpackages (commit b92b16c).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from textgen.api import load
from textgen.checkpoint import read_info
from textgen.data.corpus import load_corpus
from textgen.training import resume

DATA = Path(__file__).parent / "data"
CHECKPOINT = DATA / "checkpoint-v1-2026-11-29"
EXPECTED = json.loads((DATA / "checkpoint-v1-2026-11-29.expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def old_model():
    return load(CHECKPOINT, "cpu")


def test_an_old_checkpoint_samples_the_same_text_for_the_same_seed(old_model):
    assert "The" + old_model.generate("The", length=200, seed=7) == EXPECTED["sample_the_200_seed_7"]


def test_an_old_checkpoint_samples_the_same_batch_for_the_same_seed(old_model):
    assert old_model.generate_many("The", num_samples=3, length=120, seed=3) == EXPECTED["samples_the_120_seed_3_x3"]


def test_an_old_checkpoint_evaluates_to_the_same_figures(old_model):
    figures = old_model.evaluate((DATA / "prose.txt").read_text(encoding="utf-8"))
    expected = EXPECTED["evaluate_prose"]
    assert (figures.tokens, figures.characters) == (expected["tokens"], expected["characters"])
    for name in ("loss", "perplexity", "bits_per_char"):
        assert getattr(figures, name) == pytest.approx(expected[name], rel=1e-6)


def test_settings_an_old_checkpoint_never_recorded_read_as_off():
    recorded = json.loads((CHECKPOINT / "config.json").read_text(encoding="utf-8"))["training"]
    assert "activation_penalty" not in recorded and "activation_change_penalty" not in recorded
    training = read_info(CHECKPOINT).training.config
    assert (training.activation_penalty, training.activation_change_penalty) == (0.0, 0.0)


def test_an_old_run_resumes_to_the_same_validation_loss(tmp_path):
    shutil.copytree(CHECKPOINT, tmp_path / "ck")
    result = resume(tmp_path / "ck", load_corpus(str(DATA / "prose.txt")), {"max_steps": 60})
    assert result.steps == 60
    assert result.metrics[-1].val_loss == pytest.approx(EXPECTED["resumed_to_step_60_val_loss"], rel=1e-5)
