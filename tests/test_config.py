"""Tests for textgen.config: every config checks itself when it is made, its errors name the field
(and each front end words them its own way), and settings_for applies the presets and policies
the same way for the command line and the Python API."""

from __future__ import annotations

import dataclasses
import math

import pytest

from textgen.cli.app import flag_for
from textgen.cli.interactive import command_for
from textgen.config import (
    PRESETS, REFERENCE_SPEED, ModelConfig, OptionError, SampleConfig, SettingError, TokenizerConfig, TrainConfig,
    apply_preset, preset_for_budget, settings_for,
)

NAN = float("nan")


@pytest.mark.parametrize("config, change", [
    (TrainConfig, {"seq_len": 0}), (TrainConfig, {"batch_size": 0}), (TrainConfig, {"learning_rate": 0.0}),
    (TrainConfig, {"learning_rate": NAN}), (TrainConfig, {"clip": -1.0}), (TrainConfig, {"weight_decay": -0.1}),
    (TrainConfig, {"val_fraction": 0.6}), (TrainConfig, {"max_steps": 0}), (TrainConfig, {"epochs": 0.0}),
    (TrainConfig, {"max_time": -1.0}), (TrainConfig, {"max_time": math.inf}), (TrainConfig, {"eval_every": -1}),
    (TrainConfig, {"seed": -1}), (TrainConfig, {"precision": "half"}), (TrainConfig, {"ema_decay": 1.0}),
    (TrainConfig, {"patience": -1}), (TrainConfig, {"activation_penalty": -1.0}),
    (TrainConfig, {"activation_penalty": math.inf}), (TrainConfig, {"activation_change_penalty": NAN}),
    (ModelConfig, {"layers": 0}), (ModelConfig, {"hidden_size": 0}), (ModelConfig, {"embedding_size": -3}),
    (ModelConfig, {"hidden_size": 10**9}), (ModelConfig, {"dropout": 1.0}), (ModelConfig, {"dropout": -0.1}),
    (ModelConfig, {"dropout": NAN}), (ModelConfig, {"cell": "transformer"}), (ModelConfig, {"cell": "LSTM"}),
    (TokenizerConfig, {"kind": "bytes"}), (TokenizerConfig, {"max_vocab": 1}), (TokenizerConfig, {"min_count": 0}),
    (TokenizerConfig, {"vocab_size": 10}), (TokenizerConfig, {"documents": "pages"}),
    (TokenizerConfig, {"subword_model": "wordpiece"}),
    (SampleConfig, {"temperature": 0.0}), (SampleConfig, {"temperature": NAN}), (SampleConfig, {"temperature": math.inf}),
    (SampleConfig, {"top_k": -1}), (SampleConfig, {"top_p": 0.0}), (SampleConfig, {"top_p": 1.5}),
    (SampleConfig, {"repetition_penalty": 0.9}), (SampleConfig, {"stop": ("",)}), (SampleConfig, {"length": 0}),
    (SampleConfig, {"num_samples": 0}), (SampleConfig, {"num_samples": 100_000}), (SampleConfig, {"unknown": "ignore"}),
    (SampleConfig, {"seed": -1}),
], ids=lambda value: next(iter(value)) if isinstance(value, dict) else value.__name__)
def test_a_config_out_of_range_cannot_be_made_and_the_error_names_the_field(config, change):
    field = next(iter(change))
    with pytest.raises(OptionError) as error:
        config(**change)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field} ") and "\n" not in str(error.value)


def test_a_config_changed_by_replace_is_checked_again():
    with pytest.raises(OptionError, match="^temperature must be greater than 0"):
        dataclasses.replace(SampleConfig(), temperature=-1.0)


def test_each_front_end_words_the_same_error_in_its_own_vocabulary():
    with pytest.raises(OptionError) as error:
        SampleConfig(top_k=-2)
    assert str(error.value) == "top_k must be 0 (off) or more, got -2"  # the Python keyword
    assert error.value.worded(flag_for) == "--top-k must be 0 (off) or more, got -2"
    assert error.value.worded(command_for) == ":topk must be 0 (off) or more, got -2"
    assert error.value.worded(":topk") == ":topk must be 0 (off) or more, got -2"
    assert flag_for("kind") == "--tokenizer"


def test_a_message_naming_several_settings_words_each_in_the_front_ends_vocabulary():
    error = OptionError("batch_size", "7 does not split over 2 processes; give a smaller {batch_size} or {seq_len}",
                        "seq_len")
    assert str(error) == "batch_size 7 does not split over 2 processes; give a smaller batch_size or seq_len"
    assert error.worded(flag_for) == "--batch-size 7 does not split over 2 processes; give a smaller --batch-size or --seq-len"
    assert error.worded("--rows") == "--rows 7 does not split over 2 processes; give a smaller --rows or seq_len"
    hint = SettingError("a.txt looks like UTF-16 text; pass {encoding} utf-16", "encoding")
    assert (str(hint), hint.worded(flag_for)) == ("a.txt looks like UTF-16 text; pass encoding utf-16",
                                                  "a.txt looks like UTF-16 text; pass --encoding utf-16")


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("field", ["dropout", "weight_drop", "embedding_dropout"])
def test_dropout_below_one_is_accepted(field, dropout):
    assert getattr(ModelConfig(vocab_size=10, **{field: dropout}), field) == dropout


def test_tied_weights_imply_the_plain_stack_unless_skip_connections_are_asked_for():
    assert ModelConfig().skip_connections is True
    tied = ModelConfig(hidden_size=16, embedding_size=16, tie_weights=True)
    assert tied.skip_connections is False
    with pytest.raises(OptionError, match="^tie_weights cannot be combined with skip connections"):
        ModelConfig(hidden_size=16, embedding_size=16, tie_weights=True, skip_connections=True)
    with pytest.raises(OptionError, match=r"^tie_weights needs the embedding size equal to the hidden size \(got 16 and 32\)"):
        ModelConfig(hidden_size=32, embedding_size=16, tie_weights=True)


# --- presets and the settings of a run -------------------------------------------------------------


def test_presets_are_chosen_by_budget_in_order():
    assert preset_for_budget(80) == "tiny" and preset_for_budget(100) == "tiny" and preset_for_budget(101) == "small"
    assert preset_for_budget(600) == "medium"
    assert preset_for_budget(200) == "small" and preset_for_budget(201) == "medium"
    assert preset_for_budget(10 * 3600) == "medium"
    limits = [preset.up_to_tokens for preset in PRESETS.values()]
    assert limits == sorted(limits) and limits[-1] == float("inf")


def test_presets_are_chosen_by_the_tokens_a_budget_buys_on_this_machine():
    """The same seconds buy fewer tokens on a slower machine, and the preset follows the tokens."""
    assert preset_for_budget(200, REFERENCE_SPEED) == "small" and preset_for_budget(201, REFERENCE_SPEED) == "medium"
    assert preset_for_budget(400, REFERENCE_SPEED / 2) == "small"  # half as fast: twice the seconds
    assert preset_for_budget(401, REFERENCE_SPEED / 2) == "medium"
    assert preset_for_budget(200, REFERENCE_SPEED / 2) == "tiny" and preset_for_budget(201, REFERENCE_SPEED / 2) == "small"
    assert settings_for({"max_time": 300}, tokens_per_second=REFERENCE_SPEED / 2).preset == "small"
    assert settings_for({"max_time": 300}, tokens_per_second=REFERENCE_SPEED).preset == "medium"
    assert settings_for({"max_time": 300}, "medium", tokens_per_second=1.0).preset == "medium"  # a named one wins


def test_a_preset_fills_in_its_shape_but_keeps_what_the_user_set():
    model, config = apply_preset("medium", ModelConfig(hidden_size=100), TrainConfig(batch_size=3), keep={"batch_size"})
    preset = PRESETS["medium"]
    assert model.hidden_size == preset.model["hidden_size"] and model.dropout == preset.model["dropout"]
    assert config.batch_size == 3 and config.learning_rate == preset.train["learning_rate"]
    assert config.preset == "medium"
    with pytest.raises(OptionError, match="^preset must be one of tiny, small, medium"):
        apply_preset("huge", ModelConfig(), TrainConfig())


@pytest.mark.parametrize("request_, preset, by_budget", [
    ({"max_time": 80}, "tiny", True),
    ({"max_time": 600}, "medium", True),
    ({}, "medium", True),  # the default budget, 300 s
    ({"max_time": 600, "hidden_size": 64}, None, False),  # a shape of the user's own turns presets off
    ({"max_steps": 100}, None, False),  # so does a step or epoch limit
    ({"epochs": 2.0}, None, False),
])
def test_settings_choose_a_preset_from_the_budget_unless_a_shape_or_step_limit_is_given(request_, preset, by_budget):
    settings = settings_for(request_)
    assert (settings.preset, settings.preset_chosen_for_budget, settings.train.preset) == (preset, by_budget, preset)
    if preset:
        assert settings.model.hidden_size == PRESETS[preset].model["hidden_size"]
        assert settings.train.seq_len == PRESETS[preset].train["seq_len"]


def test_settings_keep_every_field_the_user_set_over_a_named_preset():
    settings = settings_for({"dropout": 0.05, "seq_len": 17, "kind": "word", "max_time": 30}, preset="medium")
    assert settings.preset == "medium" and not settings.preset_chosen_for_budget
    assert (settings.model.dropout, settings.train.seq_len, settings.tokenizer.kind) == (0.05, 17, "word")
    assert settings.model.hidden_size == PRESETS["medium"].model["hidden_size"]


def test_settings_with_tied_weights_turn_skip_connections_off():
    settings = settings_for({"tie_weights": True, "hidden_size": 64, "embedding_size": 64, "max_steps": 5})
    assert settings.model.tie_weights and not settings.model.skip_connections


def test_settings_refuse_a_field_no_config_has():
    with pytest.raises(OptionError, match="^hidden is not a training setting"):
        settings_for({"hidden": 64})


def test_a_training_request_may_set_every_run_field_but_the_recorded_preset():
    from textgen.config import RESUMABLE_SETTINGS, run_setting_names

    names = run_setting_names()
    assert {"kind", "hidden_size", "cell", "max_time", "learning_rate", "documents"} <= names
    assert "preset" not in names and set(RESUMABLE_SETTINGS) <= names


def test_each_train_option_maps_to_its_field_and_back():
    from textgen.cli.app import field_for, flag_for

    assert field_for("tokenizer") == "kind" and flag_for("kind") == "--tokenizer"
    assert field_for("hidden_size") == "hidden_size" and flag_for("hidden_size") == "--hidden-size"
