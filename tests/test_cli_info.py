"""End-to-end test of `textgen info`: the model, tokenizer, corpus, best figures and loss chart a
checkpoint holds. Helpers are in cli_support.py, fixtures (`cli`, `english_run`) in conftest.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cli_support import PROSE, CliResult, TrainedRun


def test_info_shows_the_model_tokenizer_corpus_and_best_figures(
    english_run: TrainedRun, cli: Callable[..., CliResult]
) -> None:
    result = cli("info", english_run.checkpoint)
    assert result.code == 0, result.output
    config = english_run.config
    assert "lstm 1 x 32, embedding 16, dropout 0, skip connections" in result.stdout
    assert f"{english_run.tokenizer}, vocabulary {config['model']['vocab_size']:,}" in result.stdout
    assert f"prose.txt ({len(PROSE):,} characters, last 0.1 held out)" in result.stdout
    assert "30 steps" in result.stdout
    best = config["best"]
    assert (f"{best['val_loss']:.4f} nats/token, {best['val_bits_per_char']:.4f} bits/char "
            f"at step {best['step']}") in result.stdout
    # the loss chart: both curves, the step axis, and the best loss as its lowest label
    assert "· training loss" in result.stdout and "• validation loss" in result.stdout
    assert re.search(r"step \d+\s+30\n", result.stdout)
    assert "┤" in result.stdout and "●" in result.stdout
