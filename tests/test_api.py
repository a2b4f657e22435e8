"""Tests for the Python API (textgen.load, TextModel): strings in and out, the same samples as the
sampler's own functions, settings checked like the CLI's, perplexity, the next-token table."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import textgen
from conftest import generate, next_token_distribution
from textgen.config import SampleConfig
from textgen.errors import TextgenError
from textgen.evaluation import evaluate_text


@pytest.mark.slow
def test_importing_textgen_imports_no_torch_and_load_is_there():
    code = "import sys, textgen; assert 'torch' not in sys.modules; assert callable(textgen.load); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout == "ok\n", done.stderr


def test_load_gives_a_text_model_with_its_tokenizer_and_info(model, char_checkpoint):
    assert isinstance(model, textgen.TextModel)
    assert model.path == char_checkpoint and model.info.tokenizer.kind == "char"
    assert model.device == torch.device("cpu")


def test_generate_returns_a_string_of_the_asked_length_repeatable_by_seed(model):
    text = model.generate("The keeper", length=120, temperature=0.8, top_k=40, seed=7)
    assert isinstance(text, str) and len(text) == 120
    assert model.generate("The keeper", length=120, temperature=0.8, top_k=40, seed=7) == text
    assert model.generate("The keeper", length=120, temperature=0.8, top_k=40, seed=8) != text


def test_generate_is_the_samplers_generate_with_the_same_config(model):
    config = SampleConfig(length=90, temperature=1.1, top_k=0, top_p=0.9, seed=3)
    expected = "".join(generate(model.model, model.tokenizer, "In winter", config))
    assert model.generate("In winter", length=90, temperature=1.1, top_k=0, top_p=0.9, seed=3) == expected


def test_stream_yields_the_pieces_of_generate(model):
    pieces = list(model.stream("The lamp", length=60, seed=2))
    assert len(pieces) == 60 and "".join(pieces) == model.generate("The lamp", length=60, seed=2)


def test_generate_many_makes_a_batch_whose_first_sample_is_generates(model):
    texts = model.generate_many("The", 4, length=80, seed=5, temperature=1.0)
    assert len(texts) == 4 and all(len(t) == 80 for t in texts) and len(set(texts)) == 4
    assert texts[0] == model.generate("The", length=80, seed=5, temperature=1.0)


def test_a_stop_text_may_be_one_string(model):
    whole = model.generate("The", length=200, seed=1, temperature=1.0)
    assert model.generate("The", length=200, seed=1, temperature=1.0, stop="e") == whole[: whole.index("e")]


def test_greedy_takes_no_chances(model):
    assert len({model.generate("The", length=50, greedy=True, seed=s) for s in range(3)}) == 1


@pytest.mark.parametrize("setting", [
    {"top_p": 2.0}, {"temperature": 0}, {"repetition_penalty": 0.5}, {"length": 0}, {"unknown": "drop"}, {"stop": [""]},
])
def test_bad_settings_raise_the_command_lines_checks_naming_the_keyword(model, setting):
    with pytest.raises(TextgenError, match=f"^{next(iter(setting))} (must|needs)"):
        model.generate("The", **setting)


def test_a_misspelt_setting_is_a_type_error(model):
    with pytest.raises(TypeError):
        model.generate("The", temprature=0.5)


def test_unknown_symbols_follow_the_unknown_setting(model):
    with pytest.raises(TextgenError, match="'Z'"):
        model.generate("Zebra", length=10)
    assert model.generate("Zebra", length=30, seed=1, unknown="skip") == model.generate("ebra", length=30, seed=1)
    with pytest.raises(TextgenError, match="'Z'"):
        model.check_prompt("Zebra")
    model.check_prompt("Zebra", "replace")  # no error


def test_perplexity_is_the_exponential_of_the_mean_loss_and_favours_the_training_text(model, prose):
    text = prose[:400]
    result = evaluate_text(model.model, model.tokenizer, text)
    assert model.perplexity(text) == pytest.approx(math.exp(result.loss))
    scrambled = "".join(sorted(text))
    assert model.perplexity(text) < model.perplexity(scrambled) / 2
    assert model.evaluate(text).bits_per_char == pytest.approx(result.bits_per_char)


def test_perplexity_of_a_single_token_is_an_error(model):
    with pytest.raises(TextgenError, match="too short"):
        model.perplexity("T")


def test_next_tokens_are_the_likeliest_with_the_settings_probabilities(model):
    config = SampleConfig(temperature=0.7, top_k=10)
    table = model.next_tokens("The keeper climbed", top=5, config=config)
    assert len(table) == 5
    probabilities = [entry.probability for entry in table]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    with torch.no_grad():
        logits, _ = model.model(torch.tensor([model.tokenizer.encode("The keeper climbed")]))
    expected = next_token_distribution(logits[0, -1], 0.7, 10)
    for entry in table:
        assert entry.probability == pytest.approx(float(expected[entry.token_id]), abs=1e-6)
        assert entry.text == model.tokenizer.token_text(entry.token_id)
    assert table[0].text == model.generate("The keeper climbed", length=1, greedy=True)
    assert len(model.next_tokens("The keeper climbed", top=20, config=SampleConfig(top_k=3))) == 3


def test_next_tokens_never_offer_unk_to_a_word_model(tmp_path, prose, make_checkpoint):
    words = textgen.load(make_checkpoint(tmp_path / "word", prose, "word"), device="cpu")
    with torch.no_grad():
        words.model.decoder.bias[words.tokenizer.unk_id] = 50.0
    table = words.next_tokens("The keeper", top=5, config=SampleConfig(top_k=0))
    assert "<unk>" not in [entry.text for entry in table] and len(table) == 5


def test_loading_what_is_not_a_checkpoint_is_a_textgen_error(tmp_path):
    with pytest.raises(TextgenError, match="no such checkpoint"):
        textgen.load(tmp_path / "nowhere")


def readme_python_example(marker: str) -> str:
    """The README's ```python block that holds `marker`, as a user would paste it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(block for block in readme.split("```python\n")[1:] if marker in block)
    return block.split("```")[0]


def test_the_readme_example_prints_what_the_api_gives(tmp_path, monkeypatch, capsys, prose, make_checkpoint):
    """The README's example runs as written (its own assert included: generate_many's first sample
    is generate's with the same seed), and prints the 300-character sample generate gives for its
    seed, then an unseeded streamed sample of at most 200 characters cut before its stop text, then
    the text's perplexity: finite, above 1."""
    example = readme_python_example("from textgen import load")
    text = prose + "\nROMEO: To be, or not to be, that is the question.\nJULIET: Romeo.\n\n"
    make_checkpoint(tmp_path / "checkpoints" / "shakespeare", text)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    model = textgen.load("checkpoints/shakespeare")
    sample = model.generate("ROMEO:", length=300, temperature=0.8, top_k=40, seed=7)
    perplexity = model.perplexity("To be, or not to be, that is the question.")
    assert len(sample) == 300 and math.isfinite(perplexity) and perplexity > 1
    assert printed.startswith(sample + "\n") and printed.endswith(f"\n{perplexity}\n")
    streamed = printed[len(sample) + 1 : -len(f"{perplexity}\n") - 1]
    assert len(streamed) <= 200 and "\n\n" not in streamed


def test_the_readme_training_example_trains_the_checkpoint_it_then_samples_from(tmp_path, monkeypatch, capsys):
    """The README's training example with two steps instead of its minute: train() returns where the
    checkpoint is, with the steps, stop reason and best figures that checkpoint records; it loads;
    the printed line is 200 characters that the same seed gives again; and the run is the one that
    `textgen train` makes of the same request, as the example's comment says."""
    from textgen.cli import main

    example = readme_python_example("from textgen.api import train")
    assert "max_time=60" in example
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    shorter = example.replace("max_time=60", "max_steps=2, hidden_size=16, embedding_size=8, val_fraction=0.01")
    names = {"load": textgen.load}  # the example goes on from the one above, which imported load
    exec(compile(shorter, "README.md", "exec"), names)
    printed = capsys.readouterr().out

    result = names["result"]
    assert Path(result.checkpoint).resolve() == (tmp_path / "checkpoints" / "docs").resolve()
    assert (result.steps, result.stop_reason) == (2, "max-steps")
    model = textgen.load(result.checkpoint)
    assert model.info.corpus.name == "python-docs" and model.info.training.steps == 2
    assert model.info.best == result.best and math.isfinite(result.best.val_loss) and result.best.val_perplexity > 1
    continuation = model.generate("The ", length=200, seed=7)
    assert len(continuation) == 200 and printed == continuation + "\n"

    with pytest.raises(SystemExit) as done:
        main(["train", "python-docs", "--out", "checkpoints/by-cli", "--max-steps", "2", "--hidden-size", "16",
              "--embedding-size", "8", "--val-fraction", "0.01"])
    assert done.value.code in (0, None), capsys.readouterr()
    by_cli = textgen.load("checkpoints/by-cli")
    assert by_cli.info.model == model.info.model and by_cli.info.best.val_loss == result.best.val_loss
    assert by_cli.generate("The ", length=200, seed=7) == continuation
