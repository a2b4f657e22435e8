"""Shared fixtures: small real texts and tiny models, so each test file stays fast on a CPU, and
the command line run in this process or trained once for the session for the test_cli*.py files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
import torch

import cli_support
import process_guard
from cli_support import CliResult, TrainedRun
from textgen.config import ModelConfig
from textgen.model import FastStep, RNNLanguageModel

# Tiny models run faster on one thread than on two that fight over a small CPU, and the same
# thread count every run keeps float sums in the same order.
torch.set_num_threads(1)

# A few paragraphs of plain English prose, enough for a char or word vocabulary with repeats.
PROSE = """\
The lighthouse stood on a low island of grey rock, a mile from the harbour mouth.
Every evening at dusk the keeper climbed its stairs, one hundred and twelve of them,
and lit the lamp that turned all night above the water. He had done it for thirty
years, and in all that time he had never once lost count of the stairs.

In winter the fog came in from the sea and lay on the island for days. Then the
keeper rang the bell as well as lighting the lamp, and the ships answered him with
their horns, one after another, as they felt their way along the coast. He knew many
of them by their voices, and he wrote their names in a book he kept on the table.

His mother had lived on the island before him. "Keep the lamp lit," she used to say,
"and the sea will keep you." He did not know whether she meant it as a promise or a
warning, and she never told him. When she died he buried her on the mainland, in the
churchyard above the harbour, where she could see the light at night.

In the spring the birds came back. They nested in the cracks of the rock and on the
ledges below the lamp room, and the keeper counted them too, the way he counted the
stairs. There were fewer every year, and he wrote that in the book as well.
"""


def python_docs(characters: int) -> str:
    """The first `characters` of the documentation topics every CPython ships (real English prose)."""
    topics = pytest.importorskip("pydoc_data.topics").topics
    return "\n\n".join(topics[key].rstrip() for key in sorted(topics))[:characters]


@pytest.fixture(scope="session")
def prose() -> str:
    return PROSE


@pytest.fixture(scope="session")
def docs_text() -> str:
    """About 30 KB of real English prose: enough for a short training run to learn something."""
    return python_docs(30_000)


@pytest.fixture
def make_model() -> Callable[..., RNNLanguageModel]:
    """A tiny model in eval mode, its weights fixed by `seed`."""

    def make(
        vocab_size: int,
        cell: str = "lstm",
        layers: int = 1,
        hidden_size: int = 32,
        embedding_size: int = 16,
        seed: int = 0,
        **kw,
    ) -> RNNLanguageModel:
        torch.manual_seed(seed)
        config = ModelConfig(
            vocab_size=vocab_size, cell=cell, layers=layers, hidden_size=hidden_size,
            embedding_size=embedding_size, **kw,
        )
        return RNNLanguageModel(config).eval()

    return make


def fit(model: RNNLanguageModel, ids: list[int], steps: int = 80) -> None:
    """A few full-batch steps on four rows of `ids`, so the model has learnt something of the text
    (peaked predictions); leaves it in eval mode."""
    data = torch.tensor(ids).view(4, -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        logits, _ = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable[..., Path]:
    """Save a tiny model, fitted for a moment to `text`, as a checkpoint directory (no CLI run)."""
    from textgen.checkpoint import CheckpointInfo, save_checkpoint
    from textgen.config import TokenizerConfig
    from textgen.tokenizers import build_tokenizer

    def make(directory: Path, text: str, kind: str = "char", steps: int = 60) -> Path:
        tokenizer_config = TokenizerConfig(kind=kind, min_count=1, vocab_size=300)
        tokenizer = build_tokenizer(tokenizer_config, text)
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, hidden_size=48, embedding_size=16)
        model = RNNLanguageModel(config)
        ids = tokenizer.encode(text)
        fit(model, ids[: len(ids) // 4 * 4], steps)
        save_checkpoint(directory, model.eval(), tokenizer,
                        CheckpointInfo(model=config, tokenizer=tokenizer_config), [])
        return directory

    return make


def generate(model: RNNLanguageModel, tokenizer, prompt: str, config, step=None) -> Iterator[str]:
    """One sample's pieces of text, whatever config.num_samples (the sampler, seen as one stream)."""
    from textgen.sampling import sample_pieces

    for piece in sample_pieces(model, tokenizer, prompt, dataclasses.replace(config, num_samples=1), step):
        if piece.text:
            yield piece.text


def run_fast_step(model, ids: torch.Tensor, step=None) -> torch.Tensor:
    """Logits for every position of `ids` (batch, time), one token at a time from the zero state."""
    step = step or FastStep(model)
    with torch.no_grad():
        state = step.from_model_state(model.init_state(1), ids.shape[0])
        logits = []
        for t in range(ids.shape[1]):
            out, state = step(ids[:, t], state)
            logits.append(out)
    return torch.stack(logits, dim=1)


def next_token_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float = 1.0) -> torch.Tensor:
    """Probabilities over the whole vocabulary as the sampler shapes them (0 for the tokens cut)."""
    from textgen.sampling import candidates

    batched = logits.reshape(-1, logits.shape[-1])
    probabilities, ids = candidates(batched, temperature, top_k, top_p)
    if ids is not None:
        probabilities = torch.zeros_like(batched, dtype=torch.float32).scatter_(-1, ids, probabilities)
    return probabilities.view(logits.shape)


@pytest.fixture(scope="session")
def char_checkpoint(tmp_path_factory: pytest.TempPathFactory, prose: str, make_checkpoint: Callable[..., Path]) -> Path:
    """A small char model fitted to PROSE, saved once for the whole suite (tests must not change it)."""
    return make_checkpoint(tmp_path_factory.mktemp("shared") / "char", prose, "char")


@pytest.fixture(scope="session")
def model(char_checkpoint: Path):
    """That checkpoint loaded as a textgen.TextModel on the CPU."""
    import textgen

    return textgen.load(char_checkpoint, device="cpu")


class TrainingProcess:
    """`python -m textgen ARGS` as a real process whose stdout is read as it comes, so a test can
    wait for training to begin, send a signal at a chosen moment, and read all the output after.

        with TrainingProcess(["train", ...], cwd, env) as run:
            run.wait_for_training()
            code = run.stop(signal.SIGINT)
        run.stdout, run.stderr
    """

    # `python -m textgen`, but the prelude first marks the moment the interpreter is up and
    # textgen's own code begins: a signal during the interpreter's start-up (site, .pth files) ends
    # Python with its own fatal error, which no program can catch, and on a slow machine that
    # start-up lasts past 0.06 s.
    _PRELUDE = ("import pathlib, runpy, sys; pathlib.Path(sys.argv.pop(1)).touch(); "
                "runpy.run_module('textgen', run_name='__main__', alter_sys=True)")

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        import subprocess
        import sys
        import tempfile
        import threading

        self._marks = tempfile.TemporaryDirectory()  # outside cwd, which tests compare before and after
        self._started = Path(self._marks.name) / "started"
        self.process = subprocess.Popen([sys.executable, "-c", self._PRELUDE, str(self._started), *args], cwd=cwd,
                                        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8")
        self.lines: list[str] = []
        self.training = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stderr = ""

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "training on" in line:
                self.training.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    def wait_for_start(self, timeout: float = 300) -> None:
        """Until textgen's own code runs (the interpreter's start-up is over)."""
        import time

        deadline = time.monotonic() + timeout  # a guard against a hang, not a speed check
        while not self._started.exists():
            assert time.monotonic() < deadline and self.process.poll() is None, self.stdout
            time.sleep(0.002)

    def wait_for_training(self, timeout: float = 300) -> None:
        assert self.training.wait(timeout), self.stdout  # a guard against a hang, not a speed check

    def stop(self, signum: int, timeout: float = 600) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def __enter__(self) -> "TrainingProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(10)
        self.stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        self._marks.cleanup()


# --- the command line, end to end (test_cli*.py; their helpers are in cli_support.py) -----------


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., CliResult]]:
    """textgen.cli.main in this process, run from tmp_path with its own corpus cache."""
    from textgen.cli import main

    monkeypatch.chdir(tmp_path)
    for variable in cli_support.LEAKY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(0 if code is None else code, cli_support.ANSI.sub("", out), cli_support.ANSI.sub("", err))

    yield call
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], TrainedRun]:
    """One tiny model per (tokenizer, language), trained by `textgen train` in this process on the
    first request and shared by every test_cli*.py file (tests must not change it)."""
    runs: dict[tuple[str, str], TrainedRun] = {}

    def get(tokenizer: str, language: str = "english") -> TrainedRun:
        if (tokenizer, language) not in runs:
            workdir = tmp_path_factory.mktemp(f"{language}-{tokenizer}")
            if language == "english":
                run = cli_support.train_tiny_model(workdir, tokenizer, "prose.txt", cli_support.PROSE,
                                                   *cli_support.TOKENIZER_OPTIONS[tokenizer])
            else:
                run = cli_support.train_tiny_model(workdir, tokenizer, "chinese.txt", cli_support.CHINESE)
            runs[tokenizer, language] = run
        return runs[tokenizer, language]

    return get


@pytest.fixture(params=cli_support.TOKENIZERS)
def english_run(request: pytest.FixtureRequest, train_once: Callable[..., TrainedRun]) -> TrainedRun:
    return train_once(request.param)


@pytest.fixture
def char_run(train_once: Callable[..., TrainedRun]) -> TrainedRun:
    return train_once("char")


# --- a test that starts a process is marked slow (process_guard.py) ---------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from process_guard.phase_with_processes_refused(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from process_guard.phase_with_processes_refused(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from process_guard.phase_with_processes_refused(item))
