"""Tests for the terminal views of textgen.render: every table drawn at 60, 80 and 200 columns
keeps each value whole (nothing cut to "m-wo…"), stays inside the width, and names the columns a
narrow terminal leaves out; the settings table follows SampleConfig's fields."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from textgen.api import NextToken
from textgen.checkpoint import CheckpointInfo
from textgen.checkpoint.records import BestRecord, CorpusRecord, MetricsRow, TrainingRecord
from textgen.config import ModelConfig, SampleConfig, TokenizerConfig, TrainConfig
from textgen.render.fitting import Column, FittedTable
from textgen.render.insight import cells_view, gradient_chart, memory_chart, surprise_text
from textgen.render.interactive import next_tokens_table, settings_table
from textgen.render.samples import SideBySide
from textgen.render.tables import comparison_table, evaluation_table, run_report, training_summary
from textgen.reports import (
    CellMatch, CellReport, EvaluationResult, GradientFade, MemoryPoint, ModelRow, TokenSurprise, TrainingResult,
)

WIDTHS = (60, 80, 200)
LEFT_OUT = "left out at this width:"


def drawn(renderable: RenderableType, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def left_out(output: str) -> set[str]:
    """The column headers a table names as left out."""
    if LEFT_OUT not in output:
        return set()
    note = " ".join(output.split(LEFT_OUT, 1)[1].split())
    return {name.strip() for name in note.split(",")}


# --- realistic data, as `textgen evaluate`, `info`, `train` and `interactive` draw it ------------

def _row(name: str, cell: str, layers: int, hidden: int, parameters: int, tokenizer: str, vocab: int, tokens: int,
         nats: float, bpc: float, unseen: int = 0, handling: str = "none") -> ModelRow:
    return ModelRow(name, cell, layers, hidden, parameters, tokenizer, vocab, tokens, nats, 2.718281828 ** nats, bpc,
                    bpc / 1.0021, unseen, handling)


COMPARED = [
    _row("m-word", "lstm", 2, 512, 3_661_184, "word", 10_000, 25_212, 5.1043, 2.2612),
    _row("checkpoints/shakespeare-char", "gru", 3, 1024, 12_345_678, "char", 65, 110_931, 1.3921, 2.0084),
    _row("m-subword", "lstm", 2, 256, 1_402_112, "subword", 2_000, 41_877, 3.9920, 2.1436),
]
FLATTERED = [dataclasses.replace(COMPARED[0], unseen=1_204, unseen_handling="skipped"), *COMPARED[1:]]

COMPARISON_CELLS = {  # the text each column shows for the rows above
    "model": [row.name for row in COMPARED],
    "cell": ["lstm 2 x 512", "gru 3 x 1024", "lstm 2 x 256"],
    "parameters": ["3,661,184", "12,345,678", "1,402,112"],
    "tokenizer": ["word 10,000", "char 65", "subword 2,000"],
    "tokens": ["25,212", "110,931", "41,877"],
    "nats/token": ["5.1043", "1.3921", "3.9920"],
    "bits/char": ["2.2612", "2.0084", "2.1436"],
}

INFO = CheckpointInfo(
    model=ModelConfig(vocab_size=65, cell="lstm", layers=2, hidden_size=512, embedding_size=128, dropout=0.2,
                      skip_connections=True),
    tokenizer=TokenizerConfig(kind="char"),
    corpus=CorpusRecord(source="corpora/tiny-shakespeare/input.txt", characters=1_115_394, val_fraction=0.1),
    training=TrainingRecord(TrainConfig(batch_size=32, seq_len=128, weight_decay=0.1), steps=12_000, elapsed=1_843.2),
    best=BestRecord(step=11_500, val_loss=1.0412, val_bits_per_char=1.5021, val_perplexity=2.83),
)
METRICS = [MetricsRow(step, train_loss=2.9 - step / 6000, val_loss=2.8 - step / 6500) for step in (500, 4000, 8000, 11_500)]

TABLES: dict[str, Callable[[], tuple[RenderableType, dict[str, list[str]]]]] = {
    "comparison": lambda: (comparison_table(COMPARED, "the held-out text"), COMPARISON_CELLS),
    "comparison, unseen symbols": lambda: (comparison_table(FLATTERED, "the held-out text"),
                                          {**COMPARISON_CELLS, "unseen": ["1,204 skipped"]}),
    "evaluation": lambda: (evaluation_table(EvaluationResult(1.3921, 4.0232, 2.0084, 110_931, 110_931, 17, "skipped"),
                                            "corpora/tiny-shakespeare/input.txt"),
                           {"": ["1.3921 nats/token", "4.023", "2.0084", "110,931", "17 left out of the score"]}),
    "training summary": lambda: (training_summary(TrainingResult(
        Path("checkpoints/shakespeare-lstm-2x512"), 12_000, 1_843.2, "max-time", INFO.best, 1.1034)),
        {"": ["max-time", "12,000", "1843.2 s", "1.1034", "1.0412 nats/token (step 11,500)", "1.5021", "2.83",
              "checkpoints/shakespeare-lstm-2x512"]}),
    "info and loss chart": lambda: (run_report(Path("checkpoints/shakespeare-lstm-2x512"), INFO, 3_661_184, METRICS),
                                    {"": ["lstm 2 x 512, embedding 128, dropout 0.2, skip connections", "3,661,184",
                                          "char, vocabulary 65", "corpora/tiny-shakespeare/input.txt",
                                          "12,000 steps in 1843 s, batch 32 x window 128, AdamW", "weight decay 0.1",
                                          "1.0412 nats/token, 1.5021 bits/char at step 11,500"]}),
    "memory reach": lambda: (memory_chart({"checkpoints/shakespeare-char": [
        MemoryPoint(1, 3.4120, 2.3650), MemoryPoint(2_048, 2.0311, 1.4078), MemoryPoint(None, 2.0084, 1.3921)]}),
        {"model": ["checkpoints/shakespeare-char"], "reset every": ["1", "2,048", "never"],
         "bits/char": ["3.4120", "2.0311", "2.0084"]}),
    "fading gradients": lambda: (gradient_chart({"m-word": [GradientFade(0, [0.91, 0.2, 0.031, 0.0042, 0.00061]),
                                                            GradientFade(1, [1.2, 0.5, 0.11, 0.02, 0.003])]}),
                                 {"model": ["m-word"], "layer": ["1", "2"], "k": ["0", "1", "2", "4"],
                                  "norm": ["9.10e-01", "6.10e-04", "1.20e+00", "3.00e-03"]}),
    "cells": lambda: (cells_view(CellReport(
        [CellMatch("inside quotes", 1, 311, 0.8123), CellMatch("position in line", 0, 17, -0.6391),
         CellMatch("inside 「」 or “”", 1, 4, 0.4012)], [0.1, -0.5, 0.9], ["The", " ", "keeper"],
        {"layer 2 forget gate": (0.0312, 0.4127)}), "checkpoints/shakespeare-char"),
        {"feature": ["inside quotes", "position in line", "inside 「」 or “”"], "unit": ["311", "17", "4"],
         "correlation": ["+0.812", "-0.639", "+0.401"], "gate": ["layer 2 forget gate"], "near 1": ["41.3%"]}),
    "next tokens": lambda: (next_tokens_table([NextToken(3, " the", 0.4123), NextToken(9, "\n", 0.0301),
                                               NextToken(41, "lighthouse", 0.0004)]),
                            {"token": ["␣the", "↵", "lighthouse"], "probability": ["41.2%", "3.0%", "0.0%"]}),
    "settings": lambda: (settings_table(SampleConfig(stop=("\n", "THE END"), seed=7, top_k=0)),
                         {"": ["500 characters", "0.8", "0 (off)", "1 (off)", "'\\n', 'THE END'", "7"]}),
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", TABLES)
def test_every_table_keeps_each_value_whole_at_60_80_and_200_columns(name, width):
    renderable, cells = TABLES[name]()
    output = drawn(renderable, width)
    assert "…" not in output, output
    assert max(len(line) for line in output.splitlines()) <= width, output
    gone = left_out(output)
    assert gone <= set(cells) | {"cell", "parameters", "tokenizer", "tokens", "nats/token", "perplexity",
                                 "bits/byte", "unseen"}
    if width == 200:
        assert not gone, output
    words = set(output.split())
    for header, values in cells.items():
        if header in gone:
            continue
        for value in values:
            missing = [word for word in value.split() if word not in words]
            assert not missing, f"{header!r} value {value!r} is not whole at {width} columns:\n{output}"


def test_a_narrow_terminal_keeps_the_model_and_bits_per_char_and_names_what_it_left_out():
    narrow = drawn(comparison_table(COMPARED, "the text"), 60)
    assert {"model", "bits/char"} <= set(narrow.split())
    assert left_out(narrow) == {"cell", "parameters", "tokens", "nats/token", "perplexity", "bits/byte", "unseen"}
    # a flattered figure keeps its explanation on screen longer than the other columns
    assert "unseen" not in left_out(drawn(comparison_table(FLATTERED, "the text"), 60))


def test_the_comparison_at_80_columns_is_readable_as_issue_20_found_it_was_not():
    output = drawn(comparison_table(COMPARED, "the text"), 80)
    for value in ("m-word", "3,661,184", "2.2612", "2.0084", "word 10,000"):
        assert value in output
    assert not re.search(r"\w…", output)


@pytest.mark.parametrize("width", WIDTHS)
def test_samples_side_by_side_keep_every_word(prose, width):
    samples = SideBySide("The", 3, caption="seed 7")
    texts = [prose[:300], prose[300:500], prose[500:900]]
    for index, text in enumerate(texts):
        samples.add(index, text, finished=index != 1)
    output = drawn(samples.table(), width)
    assert "…" not in output and max(len(line) for line in output.splitlines()) <= width
    words = set(output.split())
    assert all(word in words for text in texts for word in text.split()[1:-1])  # first/last join the prompt


def test_a_fitted_table_folds_a_word_wider_than_the_terminal_rather_than_cutting_it():
    path = "checkpoints/" + "very-long-name-" * 6 + "end"
    output = drawn(FittedTable([Column("checkpoint", importance=1)], [[path]]), 40)
    assert "…" not in output and "".join(output.split()).count(path) == 1


def test_the_settings_table_has_a_row_for_every_sampling_field():
    output = drawn(settings_table(SampleConfig(num_samples=3, unknown="skip", greedy=True)), 80)
    labels = [line.split()[0] for line in output.splitlines() if line.strip()]
    assert len(labels) == len(dataclasses.fields(SampleConfig))
    for field in dataclasses.fields(SampleConfig):
        assert re.search(rf"^\s*{field.name.replace('_', ' ')}\s", output, re.MULTILINE), field.name
    shown = {" ".join(line.split()) for line in output.splitlines()}
    assert {"num samples 3", "unknown skip", "greedy on", "temperature 0.8 (unused: greedy)"} <= shown


def test_a_new_sampling_field_appears_in_the_settings_table_without_an_edit():
    @dataclasses.dataclass
    class WithMinP(SampleConfig):
        min_p: float = 0.05

    output = drawn(settings_table(WithMinP()), 80)
    assert "min p 0.05" in {" ".join(line.split()) for line in output.splitlines()}


def test_a_value_shaped_like_markup_is_shown_as_written():
    output = drawn(comparison_table([dataclasses.replace(COMPARED[0], name="[bold]run[/bold]")], "the text"), 200)
    assert "[bold]run[/bold]" in output


def test_the_surprise_text_starts_with_the_first_token_that_nothing_predicts():
    tokens = [TokenSurprise(c, bits, 2.0 ** -bits, []) for c, bits in zip("irst Citizen", [0.5, 3.0, 9.0] * 4)]
    shown = drawn(surprise_text(tokens, first_token="F"), 80)
    assert shown.startswith("First Citizen\n") and "surprise in bits" in shown
