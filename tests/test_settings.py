"""Tests that the sampling settings are listed once, as SampleConfig's fields: every field is a
keyword of the Python API, a command of the interactive loop and an option of `textgen sample`,
each found from the fields and nothing listed here by hand."""

from __future__ import annotations

import dataclasses
import io
import typing

import pytest
import typer
from rich.console import Console

from textgen.cli.app import app, flag_for
from textgen.cli.interactive import SETTING_COMMANDS, Session, help_text, setting_commands
from textgen.cli.sample import _sample_config
from textgen.config import OptionError, SampleConfig, sample_settings

SETTINGS = sample_settings()
TYPES = typing.get_type_hints(SampleConfig)


def another_value(setting: dataclasses.Field) -> typing.Any:
    """A valid value other than the default, found from the field's type and its own checks."""
    default, kind = setting.default, TYPES[setting.name]
    if typing.get_origin(kind) is tuple:
        candidates: list[typing.Any] = [("\n",)]
    elif default is None:
        candidates = [7]
    elif kind is bool:
        candidates = [not default]
    elif kind is int:
        candidates = [default + 1]
    elif kind is float:
        candidates = [default / 2, default * 2, default + 1]
    else:  # a text with a fixed set of choices: its own check names them
        candidates = [choice for choice in choices_of(setting.name) if choice != default]
    for candidate in candidates:
        try:
            SampleConfig(**{setting.name: candidate})
        except OptionError:
            continue
        return candidate
    raise AssertionError(f"no valid value found for {setting.name}")


def choices_of(name: str) -> list[str]:
    with pytest.raises(OptionError) as refused:
        SampleConfig(**{name: "?"})
    return refused.value.problem.removeprefix("must be one of ").split(", not")[0].split(", ")


def as_typed(value: typing.Any) -> str:
    """`value` as a user types it after a command or an option."""
    if isinstance(value, bool):  # the interactive loop's switch; a command line gives the flag alone
        return "on" if value else "off"
    if isinstance(value, tuple):
        return "\\n" if value == ("\n",) else value[0]
    return str(value)


def ids(setting: dataclasses.Field) -> str:
    return setting.name


@pytest.mark.parametrize("setting", SETTINGS, ids=ids)
def test_every_sampling_setting_is_a_keyword_of_the_python_api(model, setting):
    value = another_value(setting)
    assert getattr(model.settings(**{setting.name: value}), setting.name) == value


def test_the_python_api_refuses_a_keyword_that_is_no_sampling_setting_as_python_does(model):
    with pytest.raises(TypeError, match="^'min_q' is not a sampling setting; the settings are greedy, length"):
        model.settings(min_q=0.1)


@pytest.mark.parametrize("setting", SETTINGS, ids=ids)
def test_every_sampling_setting_is_an_interactive_command_unless_it_says_why_not(setting):
    if not setting_commands(setting):
        assert setting.name == "num_samples"  # the loop writes one sample at a time: interactive.py says so
        return
    value = another_value(setting)
    screen = io.StringIO()
    session = Session(None, SampleConfig(), Console(file=screen, width=200), input)
    session.handle(f"{setting_commands(setting)[0]} {as_typed(value)}")
    assert getattr(session.config, setting.name) == value, screen.getvalue()
    assert setting_commands(setting)[0] in help_text()


def test_the_interactive_commands_are_the_settings_commands_and_no_others():
    assert {command.field for command in SETTING_COMMANDS.values()} \
        == {setting.name for setting in SETTINGS if setting_commands(setting)}


@pytest.mark.parametrize("setting", SETTINGS, ids=ids)
def test_every_sampling_setting_is_an_option_of_textgen_sample(setting):
    value = another_value(setting)
    typed = [flag_for(setting.name)] if isinstance(value, bool) else [flag_for(setting.name), as_typed(value)]
    command = typer.main.get_command(app).commands["sample"]
    context = command.make_context("sample", ["checkpoint", *typed])
    assert getattr(_sample_config(context.params), setting.name) == value
    assert setting.metadata["help"] in [option.help for option in command.params]


@pytest.mark.parametrize("setting", SETTINGS, ids=ids)
def test_every_sampling_setting_defaults_alike_in_the_api_and_on_the_command_line(setting):
    command = typer.main.get_command(app).commands["sample"]
    context = command.make_context("sample", ["checkpoint"])
    assert getattr(_sample_config(context.params), setting.name) == setting.default
