"""Tests for calibration: the automatic preset is chosen by the tokens a time budget buys on this
machine, measured by timing the calibration shape for a moment."""

from __future__ import annotations

import pytest
import torch

import textgen.training.calibration as calibration
from textgen.config import REFERENCE_SPEED
from textgen.training.calibration import calibrated_settings, reference_speed


def test_the_reference_speed_is_measured_without_touching_the_random_state():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    speed = reference_speed(torch.device("cpu"), "float32", seconds=0.05)
    assert speed > 0 and torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(("speed", "budget", "expected"), [
    (REFERENCE_SPEED, 80, "tiny"), (REFERENCE_SPEED, 150, "small"), (REFERENCE_SPEED, 600, "medium"),
    (REFERENCE_SPEED / 3, 600, "small"),  # a CPU three times slower buys a third of the tokens
    (REFERENCE_SPEED / 3, 250, "tiny"),
    (REFERENCE_SPEED * 10, 80, "medium"),  # a GPU buys many more
])
def test_the_budget_chooses_by_the_measured_speed(monkeypatch, speed, budget, expected):
    monkeypatch.setattr(calibration, "reference_speed", lambda device, precision: speed)
    settings, measured = calibrated_settings({"max_time": budget})
    assert settings.preset == expected and settings.preset_chosen_for_budget
    assert measured.tokens == pytest.approx(speed * budget) and f"{speed:,.0f} tokens/s" in measured.describe()


@pytest.mark.parametrize("request_, preset", [
    ({"max_time": 80}, "medium"), ({"max_time": 80, "hidden_size": 64}, None), ({"max_steps": 10}, None),
    ({"epochs": 1.0}, None),
])
def test_nothing_is_measured_when_the_user_chose_the_shape_or_the_steps(monkeypatch, request_, preset):
    def measure(device, precision):
        raise AssertionError("measured")

    monkeypatch.setattr(calibration, "reference_speed", measure)
    settings, measured = calibrated_settings(request_, preset)
    assert measured is None and not settings.preset_chosen_for_budget
