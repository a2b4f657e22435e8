"""Hostile input through the real `textgen` command line, as a table of cases.

Each case is one command a careless, unlucky or malicious user could type: a corpus that is not
text, an option at zero, below zero, beyond any integer type, NaN or not a number, a checkpoint
that has been truncated, swapped or forged, a full disk, an interruption. Every case states the
exit code it must end with (0 where the input is legitimately usable, 2 for bad input, 130 for
an interruption), a pattern the one-line `error:` message must match, and every case proves that
nothing the user already had was touched: each file under the test's folder is fingerprinted
(contents and modification time) before the command and compared after it, and a refused command
must not leave anything new behind either. "Traceback" must never appear.

The commands run in-process through textgen.cli.main, the function the console script calls,
from the test's own temporary folder with its own corpus cache. A few checks need a real
process: a sample of ten million characters whose memory is watched as it streams, and SIGINT
or SIGTERM sent to a training run at seeded random moments.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TrainingProcess
from textgen.cli import main

# Original text for the corpus every checkpoint here is trained on: about 700 characters, no
# backslash (so each of its characters can be given to --stop as it is).
PROSE = """\
The ferry left the north pier at seven every morning, loaded with bread, post and
three or four sleepy passengers. Its captain whistled the same tune on each crossing.
On calm days the gulls followed it halfway across the bay and then turned back;
on rough days nothing followed it at all, and the captain stopped whistling.
The island had one shop, one school and one road, which ran from the harbour
to the lighthouse and back again. Children walked it twice a day, counting sheep.
"""

# A model small enough that training it for two steps costs a few hundredths of a second.
SHAPE = ("--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--seq-len", "8", "--batch-size", "2")
TINY = (*SHAPE, "--max-steps", "2")
CACHE = "cache"  # the corpus cache, inside the test's folder; created by the command if at all
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Variables that would let the caller's terminal, proxies or corpus cache leak into a run.
LEAKY_VARIABLES = (
    "COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "TEXTGEN_SHAKESPEARE_URL", "TEXTGEN_CACHE_DIR", "XDG_CACHE_HOME",
)
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
HUGE_INT = str(10**20)  # beyond int64, so any fixed-width conversion would overflow
HUGE_FLOAT = "1e300"


# --- running the command --------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def call_main(argv: list[str]) -> int:
    """The exit code main() ends with; anything else escaping it is what a user would see as a
    traceback, so it is printed as one and reported as exit code -1."""
    try:
        main(argv)
    except SystemExit as exit_:
        return 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - a bug in textgen, reported by the assertions
        sys.stderr.write(traceback.format_exc())
        return -1
    return 0


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    # Two threads on a busy two-core machine make a tiny model many times slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], torch_one_thread: None
) -> Callable[..., Outcome]:
    """textgen.cli.main in this process, run from tmp_path with its own corpus cache."""
    monkeypatch.chdir(tmp_path)
    for variable in LEAKY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / CACHE))

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = call_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Outcome(code, ANSI.sub("", out), ANSI.sub("", err))

    return run


def process_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    env.update(TEXTGEN_CACHE_DIR=str(tmp_path / CACHE), OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8",
               PYTHONUNBUFFERED="1")
    return env


# --- proof that nothing was touched ---------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """A fingerprint of everything under `root`: each file's SHA-256, size, modification time and
    mode, each link's target, each folder's existence. Links are not followed (one case is a
    loop); a hash rather than the bytes, since one case has a 20 MB corpus."""
    state: dict[str, tuple] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                state[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                state[key] = ("folder",)
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                state[key] = ("file", digest, info.st_size, info.st_mtime_ns, stat.S_IMODE(info.st_mode))
    return state


def assert_untouched(before: dict[str, tuple], after: dict[str, tuple], nothing_new: bool) -> None:
    """Every file, link and folder that was there is still there, byte for byte and with the same
    modification time; with `nothing_new`, nothing was added either (the corpus cache aside)."""
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"changed or removed: {changed}"
    if nothing_new:
        added = sorted(name for name in after if name not in before and name.split("/")[0] != CACHE)
        assert not added, f"left behind: {added}"


def assert_clean_outcome(outcome: Outcome, code: int, message: str) -> None:
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stderr
    assert outcome.code == code, (f"exit {outcome.code}, stderr: {outcome.stderr!r}, "
                                  f"stdout tail: {outcome.stdout[-400:]!r}")
    if code == 0:
        assert outcome.stderr == "", outcome.stderr
        return
    assert re.fullmatch(r"error: [^\n]+\n", outcome.stderr), f"not one error line: {outcome.stderr!r}"
    assert re.search(message, outcome.stderr), f"{message!r} not in {outcome.stderr!r}"


# --- what the cases build -------------------------------------------------------------------


@dataclass
class Built:
    """Checkpoints trained once for the module; cases copy them before damaging the copy."""

    root: Path
    char: Path  # char LSTM, the checkpoint most cases use
    word: Path  # word LSTM, for its tokenizer.json
    gru: Path  # char GRU, for resuming with another cell
    wide: Path  # char LSTM with hidden size 24, for weights of the wrong shape


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, torch_one_thread: None) -> Built:
    root = tmp_path_factory.mktemp("hostile-checkpoints")
    (root / "corpus.txt").write_text(PROSE, encoding="utf-8")
    runs = {
        "char": (),
        "word": ("--tokenizer", "word", "--min-count", "1"),
        "gru": ("--cell", "gru"),
        "wide": ("--hidden-size", "24"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for variable in LEAKY_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("TEXTGEN_CACHE_DIR", str(root / CACHE))
        for name, options in runs.items():
            code = call_main(["train", "corpus.txt", "--out", name, *TINY, *options])
            assert code == 0, f"could not train the {name} checkpoint"
    return Built(root, root / "char", root / "word", root / "gru", root / "wide")


Setup = Callable[[Path, Built], None]


def nothing(folder: Path, built: Built) -> None:
    pass


def both(*steps: Setup) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        for step in steps:
            step(folder, built)

    return setup


def corpus(name: str = "corpus.txt", data: bytes | str = PROSE) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)

    return setup


def generated_corpus(name: str, make: Callable[[], bytes]) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        (folder / name).write_bytes(make())

    return setup


def checkpoint(source: str = "char", damage: Callable[[Path, Built], None] | None = None, name: str = "ck") -> Setup:
    """A copy of one of the module's checkpoints at `name`, damaged by `damage` if given."""

    def setup(folder: Path, built: Built) -> None:
        copy = folder / name
        shutil.copytree(getattr(built, source), copy)
        if damage is not None:
            damage(copy, built)

    return setup


def tiny_png() -> bytes:
    """A real 1 x 1 PNG: signature, IHDR, IDAT and IEND chunks with their CRCs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
            + chunk(b"IEND", b""))


def twenty_megabytes_without_a_newline() -> bytes:
    line = PROSE.replace("\n", " ").encode("utf-8")
    return (line * (20_000_000 // len(line) + 1))[:20_000_000]


def seventy_thousand_words() -> bytes:
    """70,000 distinct made-up words, each twice (so --min-count 2 keeps them), in seeded order."""
    rng = random.Random(65_536)
    words: set[str] = set()
    while len(words) < 70_000:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 9))))
    ordered = sorted(words)
    first, second = ordered[:], ordered[:]
    rng.shuffle(first)
    rng.shuffle(second)
    return (" ".join(first) + "\n" + " ".join(second) + "\n").encode("utf-8")


def symlink(name: str, target: str) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        os.symlink(target, folder / name)

    return setup


def chmod_000(name: str) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        (folder / name).chmod(0)

    return setup


def folder_with_a_file(name: str) -> Setup:
    def setup(folder: Path, built: Built) -> None:
        (folder / name).mkdir()
        (folder / name / "notes.txt").write_text("keep me\n", encoding="utf-8")

    return setup


# Damage done to a checkpoint copy.


def edit_config(change: Callable[[dict], object]) -> Callable[[Path, Built], None]:
    def damage(copy: Path, built: Built) -> None:
        config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
        change(config)
        (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")

    return damage


def write_file(name: str, data: bytes) -> Callable[[Path, Built], None]:
    def damage(copy: Path, built: Built) -> None:
        (copy / name).write_bytes(data)

    return damage


def remove_file(name: str) -> Callable[[Path, Built], None]:
    def damage(copy: Path, built: Built) -> None:
        (copy / name).unlink()

    return damage


def take_file_from(source: str, name: str) -> Callable[[Path, Built], None]:
    def damage(copy: Path, built: Built) -> None:
        shutil.copyfile(getattr(built, source) / name, copy / name)

    return damage


def truncate_file(name: str) -> Callable[[Path, Built], None]:
    def damage(copy: Path, built: Built) -> None:
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(data[: len(data) // 2])

    return damage


def claim_terabytes(name: str) -> Callable[[Path, Built], None]:
    """A safetensors file starts with its JSON header's length, 8 bytes little-endian; claim 5 TB."""

    def damage(copy: Path, built: Built) -> None:
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(struct.pack("<Q", 5 * 2**40) + data[8:])

    return damage


def drop_a_token(copy: Path, built: Built) -> None:
    vocabulary = json.loads((copy / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary["tokens"] = vocabulary["tokens"][:-1]
    (copy / "tokenizer.json").write_text(json.dumps(vocabulary), encoding="utf-8")


def killed_save(tmp: bool = False, old: bool = False, keep_checkpoint: bool = True) -> Setup:
    """What a save killed by SIGKILL leaves, as textgen.checkpoint saves: the new checkpoint
    written into `.ck.tmp`, the previous one renamed to `.ck.old`, then the new one renamed in.
    `tmp`: a half-written `.ck.tmp`; `old`: the previous checkpoint aside; `keep_checkpoint`
    False: killed between the two renames, so `ck` itself is missing."""

    def setup(folder: Path, built: Built) -> None:
        if keep_checkpoint:
            shutil.copytree(built.char, folder / "ck")
        if old:
            shutil.copytree(built.char, folder / ".ck.old")
        if tmp:
            shutil.copytree(built.wide, folder / ".ck.tmp")
            truncate_file("model.safetensors")(folder / ".ck.tmp", built)
            (folder / ".ck.tmp" / "trainer.safetensors").unlink()

    return setup


# Patches applied just before the command runs.

Patch = Callable[[pytest.MonkeyPatch, Path], None]


def raising(error: BaseException) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise type(error)(*error.args)  # a fresh one each time, with no earlier traceback attached

    return fail


def disk_full_at(target: str) -> Patch:
    def patch(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        monkeypatch.setattr(target, raising(ENOSPC))

    return patch


def interrupted_at(target: str) -> Patch:
    """Ctrl-C arriving while `target` runs: Python raises KeyboardInterrupt wherever it is."""

    def patch(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        monkeypatch.setattr(target, raising(KeyboardInterrupt()))

    return patch


def unreadable(name: str) -> Patch:
    """As a root user ignores chmod, reading `name` fails as it would for another user."""

    def patch(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        for module in (builtins, io):
            original = module.open

            def guarded(file, *args, _original=original, **kwargs):
                if isinstance(file, (str, os.PathLike)) and Path(file).name == name:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
                return _original(file, *args, **kwargs)

            monkeypatch.setattr(module, "open", guarded)
        original_read = Path.read_bytes

        def read_bytes(self: Path) -> bytes:
            if self.name == name:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return original_read(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)

    return patch


def no_network(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    # Port 1 on the loopback: refused at once, and nothing leaves the machine.
    monkeypatch.setenv("TEXTGEN_SHAKESPEARE_URL", "http://127.0.0.1:1/input.txt")


# Checks run after the command, beyond the ones every case gets.

Check = Callable[[Path, Outcome, Callable[..., Outcome]], None]


def tokens_of(folder: Path, name: str = "ck") -> list[str]:
    return json.loads((folder / name / "tokenizer.json").read_text(encoding="utf-8"))["tokens"]


def config_of(folder: Path, name: str = "ck") -> dict:
    return json.loads((folder / name / "config.json").read_text(encoding="utf-8"))


def samples(name: str = "ck", length: int = 30) -> Check:
    """The checkpoint loads and writes exactly `length` characters after an empty prompt."""

    def check(folder: Path, outcome: Outcome, run: Callable[..., Outcome]) -> None:
        sampled = run("sample", name, "--length", str(length), "--seed", "3")
        assert sampled.code == 0, sampled.stderr
        assert len(sampled.stdout) == length + 1 and sampled.stdout.endswith("\n")

    return check


def all_of(*checks: Check) -> Check:
    def check(folder: Path, outcome: Outcome, run: Callable[..., Outcome]) -> None:
        for each in checks:
            each(folder, outcome, run)

    return check


def vocabulary(predicate: Callable[[list[str], dict], bool], why: str) -> Check:
    def check(folder: Path, outcome: Outcome, run: Callable[..., Outcome]) -> None:
        assert predicate(tokens_of(folder), config_of(folder)), why

    return check


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int  # 0: usable input; 2: refused; 130: interrupted
    message: str = ""  # regex the one `error:` line must match (a success prints nothing on stderr)
    setup: Setup = nothing
    patch: Patch | None = None
    check: Check | None = None
    skip_if: tuple[bool, str] = (False, "")


def train(*args: str, out: str = "ck") -> tuple[str, ...]:
    return ("train", *args, "--out", out, *TINY)


CORPUS_CASES = [
    Case("missing-path", train("nowhere.txt"), 2, r"no such file or known corpus: nowhere\.txt"),
    # A folder is a corpus of its text files (read a block at a time); this one is too short.
    Case("a-directory", train("notes"), 2, r"shorter than one training window", folder_with_a_file("notes")),
    Case("a-folder-without-text", train("photos"), 2, r"photos holds no text files", corpus("photos/cat.png", tiny_png())),
    Case("empty-file", train("empty.txt"), 2, r"empty\.txt is empty", corpus("empty.txt", b"")),
    Case("only-whitespace", train("blank.txt"), 2, r"blank\.txt is empty", corpus("blank.txt", " \n\t\r\n   \n")),
    Case("dev-null", train("/dev/null"), 2, r"/dev/null is empty"),
    # One symbol a million times is valid UTF-8 text, and nothing in the code or README asks for
    # a second symbol: a one-token vocabulary trains, and the model can only write that symbol.
    Case("one-character-a-million-times", train("a.txt"), 0, "", corpus("a.txt", "a" * 1_000_000),
         check=all_of(vocabulary(lambda tokens, config: tokens == ["a"], "the vocabulary is the one symbol"),
                      samples())),
    # No line break in 20 MB is still one valid text: it trains (one step; the held-out 2 MB
    # are scored once at the end).
    Case("20-megabytes-without-a-newline", ("train", "long.txt", "--out", "ck", *SHAPE, "--max-steps", "1"), 0, "",
         generated_corpus("long.txt", twenty_megabytes_without_a_newline), check=samples()),
    Case("nul-bytes", train("nul.txt"), 2, r"nul\.txt looks binary \(NUL byte at offset 5\)",
         corpus("nul.txt", b"hello\x00world\n" * 100)),
    Case("png-image", train("picture.png"), 2, r"picture\.png looks binary \(NUL byte at offset 8\)",
         generated_corpus("picture.png", tiny_png)),
    Case("latin-1-text", train("latin.txt"), 2,
         r"latin\.txt is not valid UTF-8: bad byte 0xe9 at byte offset 3; pass --encoding",
         corpus("latin.txt", "Café crème, déjà vu.\n".encode("latin-1") * 40)),
    Case("latin-1-text-with-its-encoding", train("latin.txt", "--encoding", "latin-1"), 0, "",
         corpus("latin.txt", "Café crème, déjà vu.\n".encode("latin-1") * 40),
         check=vocabulary(lambda tokens, config: "é" in tokens, "é is read as é")),
    # UTF-16 is full of NUL bytes; calling it binary would hide the option that reads it.
    Case("utf-16-with-bom", train("wide.txt"), 2, r"wide\.txt looks like UTF-16 text.*pass --encoding utf-16$",
         corpus("wide.txt", (PROSE * 3).encode("utf-16"))),
    Case("utf-16-without-bom", train("wide.txt"), 2, r"wide\.txt looks like UTF-16-LE text.*pass --encoding utf-16-le$",
         corpus("wide.txt", (PROSE * 3).encode("utf-16-le"))),
    Case("utf-16-with-its-encoding", train("wide.txt", "--encoding", "utf-16"), 0, "",
         corpus("wide.txt", (PROSE * 3).encode("utf-16")),
         check=vocabulary(lambda tokens, config: "\ufeff" not in tokens, "the BOM is not a token")),
    # read_text_file drops a leading BOM: it is a mark about the file, not a character of the text.
    Case("utf-8-with-bom", train("bom.txt"), 0, "", corpus("bom.txt", b"\xef\xbb\xbf" + PROSE.encode("utf-8")),
         check=vocabulary(lambda tokens, config: "\ufeff" not in tokens
                          and config["corpus"]["characters"] == len(PROSE),
                          "the BOM is neither a token nor a character of the text")),
    # Line breaks are kept as they are: "\r" is a symbol of the text like any other.
    Case("crlf-line-endings", train("crlf.txt"), 0, "", corpus("crlf.txt", PROSE.replace("\n", "\r\n")),
         check=all_of(vocabulary(lambda tokens, config: "\r" in tokens and "\n" in tokens, "\\r and \\n are tokens"),
                      samples())),
    Case("utf-8-cut-inside-a-character", train("cut.txt"), 2,
         r"cut\.txt is not valid UTF-8: bad byte 0xe2 at byte offset",
         corpus("cut.txt", PROSE.encode("utf-8") + b"\xe2\x82")),
    Case("symlink-loop", train("loop.txt"), 2, r"loop\.txt",
         both(symlink("loop.txt", "other.txt"), symlink("other.txt", "loop.txt"))),
    Case("dangling-symlink", train("gone.txt"), 2, r"no such file: gone\.txt", symlink("gone.txt", "nowhere.txt")),
    Case("unreadable-file-chmod-000", train("secret.txt"), 2, r"cannot read secret\.txt: permission denied",
         both(corpus("secret.txt"), chmod_000("secret.txt")),
         skip_if=(hasattr(os, "geteuid") and os.geteuid() == 0,
                  "root reads a chmod 000 file; the simulated case below covers it")),
    Case("unreadable-file-simulated", train("secret.txt"), 2, r"cannot read secret\.txt: permission denied",
         corpus("secret.txt"), patch=unreadable("secret.txt")),
    Case("path-with-spaces-and-non-ascii", train("my texts/été à Zürich.txt", out="models/ck ñ"), 0, "",
         corpus("my texts/été à Zürich.txt"), check=samples("models/ck ñ")),
    Case("unknown-encoding", train("corpus.txt", "--encoding", "klingon"), 2, r"unknown encoding: klingon", corpus()),
    Case("encoding-that-is-not-text", train("corpus.txt", "--encoding", "hex"), 2, r"unknown encoding: hex", corpus()),
    # Codecs that fail with a bare UnicodeError, which has no position to report.
    Case("encoding-punycode", train("corpus.txt", "--encoding", "punycode"), 2, r"corpus\.txt is not valid punycode",
         corpus()),
    Case("encoding-undefined", train("corpus.txt", "--encoding", "undefined"), 2, r"corpus\.txt is not valid undefined",
         corpus()),
    Case("shorter-than-one-window", train("short.txt"), 2, r"shorter than one training window",
         corpus("short.txt", "hi\n")),
    Case("named-corpus-without-network", train("shakespeare"), 2, r"could not download shakespeare",
         patch=no_network),
    # More distinct words than 16 bits can number: the default vocabulary keeps the 20,000
    # commonest; the held-out 1% keeps validation cheap (its logits are tokens x vocabulary).
    Case("70000-distinct-words-default-vocabulary",
         train("words.txt", "--tokenizer", "word", "--val-fraction", "0.01"), 0, "",
         generated_corpus("words.txt", seventy_thousand_words),
         check=vocabulary(lambda tokens, config: len(tokens) == 20_000, "--max-vocab 20000 holds")),
    # ... and all of them: ids above 65,535 must survive training, saving, loading and sampling.
    # Nothing is held out, so no validation pass over 70,000 logits per token.
    Case("70000-distinct-words-all-kept",
         train("words.txt", "--tokenizer", "word", "--max-vocab", "100000", "--min-count", "1", "--val-fraction", "0"),
         0, "", generated_corpus("words.txt", seventy_thousand_words),
         check=all_of(vocabulary(lambda tokens, config: len(tokens) > 65_536, "more than 65,536 tokens"),
                      samples(length=60))),
]


# Every numeric option at zero, below zero, huge, NaN and not a number. Each row: the option,
# whether click parses it as an integer, options that give it meaning (a word or subword
# tokenizer, a limit that still ends the run), and the expected (code, message) for zero,
# negative and huge, and for NaN where the option is a float.
def refused(message: str) -> tuple[int, str]:
    return 2, message


OK = (0, "")

TRAIN_OPTIONS = [
    ("--seq-len", int, (), refused("--seq-len must be at least 1"), refused("--seq-len must be at least 1"),
     refused("shorter than one training window"), None),
    # A batch larger than the text has rows is lowered to fit (the run's plan says so).
    ("--batch-size", int, (), refused("--batch-size must be at least 1"), refused("--batch-size must be at least 1"),
     OK, None),
    ("--learning-rate", float, (), refused("--learning-rate must be greater than 0"),
     refused("--learning-rate must be greater than 0"), refused(r"training diverged at step \d+"),
     refused("--learning-rate must be greater than 0")),
    # --help: "Gradient-norm clipping (0 = off)".
    ("--clip", float, (), OK, refused(r"--clip must be 0 \(off\) or more"), OK, refused("--clip must be")),
    # No range is documented, but a negative decay pushes weights away from zero (the opposite of
    # what the option is for) and NaN is no number: both should be refused naming the option,
    # as every other option is. A huge decay may be refused or diverge, cleanly either way.
    ("--weight-decay", float, (), OK, refused("--weight-decay"), refused(r"--weight-decay|training diverged"),
     refused("--weight-decay")),
    # --help: "(0 = off)".
    ("--ema-decay", float, (), OK, refused(r"--ema-decay must be in \[0, 1\)"),
     refused(r"--ema-decay must be in \[0, 1\)"), refused(r"--ema-decay must be in \[0, 1\)")),
    # --help: "(0 = five per run)"; a huge value means the only validation is the final one.
    ("--eval-every", int, (), OK, refused(r"--eval-every must be 0 \(automatic\) or more"), OK, None),
    ("--seed", int, (), OK, refused("--seed must be between 0 and"), refused("--seed must be between 0 and"), None),
    # Half an epoch ends the run when --max-steps does not.
    ("--max-steps", int, ("--epochs", "0.5"), refused("--max-steps must be at least 1"),
     refused("--max-steps must be at least 1"), OK, None),
    ("--epochs", float, (), refused("--epochs must be greater than 0"), refused("--epochs must be greater than 0"),
     OK, refused("--epochs must be greater than 0")),
    ("--max-time", float, (), refused("--max-time must be greater than 0 seconds"),
     refused("--max-time must be greater than 0 seconds"), OK, refused("--max-time must be greater than 0 seconds")),
    # --help: "(0 = never)".
    ("--patience", int, (), OK, refused(r"--patience must be 0 \(off\) or more"), OK, None),
    ("--layers", int, (), refused("--layers must be at least 1"), refused("--layers must be at least 1"),
     refused("--layers must be at most 64"), None),
    ("--hidden-size", int, (), refused("--hidden-size must be at least 1"), refused("--hidden-size must be at least 1"),
     refused("--hidden-size must be at most 65,536"), None),
    ("--embedding-size", int, (), refused("--embedding-size must be at least 1"),
     refused("--embedding-size must be at least 1"), refused("--embedding-size must be at most 65,536"), None),
    ("--dropout", float, (), OK, refused(r"--dropout must be in \[0, 1\)"), refused(r"--dropout must be in \[0, 1\)"),
     refused(r"--dropout must be in \[0, 1\)")),
    # README: --val-fraction 0 holds nothing out (evaluate then asks for a file).
    ("--val-fraction", float, (), OK, refused(r"--val-fraction must be between 0 and 0\.5"),
     refused(r"--val-fraction must be between 0 and 0\.5"), refused(r"--val-fraction must be between 0 and 0\.5")),
    ("--max-vocab", int, ("--tokenizer", "word"), refused("--max-vocab must be at least 2"),
     refused("--max-vocab must be at least 2"), refused("--max-vocab must be at most 1,000,000"), None),
    # No word of a short text occurs 10^20 times: a vocabulary of <unk> alone could only ever
    # write <unk>, which the README promises a word model never does.
    ("--min-count", int, ("--tokenizer", "word"), refused("--min-count must be at least 1"),
     refused("--min-count must be at least 1"), refused("--min-count"), None),
    ("--vocab-size", int, ("--tokenizer", "subword"), refused("--vocab-size must be (between 260|at least 260)"),
     refused("--vocab-size must be (between 260|at least 260)"),
     refused("--vocab-size must be (between 260 and|at most) 1,000,000"), None),
    # --help: "(0 = all)"; more lines than the text has is all of them.
    ("--subword-sample", int, ("--tokenizer", "subword"), OK, refused(r"--subword-sample must be 0 \(all lines\) or more"),
     OK, None),
]

# Every stop text the corpus could produce: a sample of any length must then end at once.
STOP_EVERYTHING = tuple(arg for symbol in sorted(set(PROSE)) for arg in ("--stop", symbol))

SAMPLE_OPTIONS = [
    # A length beyond any integer type must neither overflow nor be clamped; the stops end it.
    ("--length", int, STOP_EVERYTHING, refused("--length must be at least 1 character"),
     refused("--length must be at least 1 character"), OK, None),
    ("--temperature", float, (), refused("--temperature must be greater than 0"),
     refused("--temperature must be greater than 0"), OK,
     refused(r"--temperature must be greater than 0 \(and finite\)")),
    # --help: "(0 = all)"; more than the vocabulary is all of it.
    ("--top-k", int, (), OK, refused(r"--top-k must be 0 \(off\) or more"), OK, None),
    ("--top-p", float, (), refused("--top-p must be greater than 0 and at most 1"),
     refused("--top-p must be greater than 0 and at most 1"), refused("--top-p must be greater than 0 and at most 1"),
     refused("--top-p must be greater than 0 and at most 1")),
    ("--repetition-penalty", float, (), refused("--repetition-penalty must be at least 1"),
     refused("--repetition-penalty must be at least 1"), OK, refused("--repetition-penalty must be at least 1")),
    ("--num-samples", int, (), refused("--num-samples must be at least 1 and at most 1000"),
     refused("--num-samples must be at least 1 and at most 1000"),
     refused("--num-samples must be at least 1 and at most 1000"), None),
    ("--seed", int, (), OK, refused("--seed must be between 0 and"), refused("--seed must be between 0 and"), None),
]


def option_cases(command: str, options: list) -> list[Case]:
    cases = []
    for option, kind, context, zero, negative, huge, nan in options:
        not_a_number = refused(rf"Invalid value for '{option}'")
        values = {"zero": ("0", zero), "negative": ("-1", negative),
                  "huge": (HUGE_INT if kind is int else HUGE_FLOAT, huge),
                  "nan": ("nan", nan if kind is float else not_a_number), "abc": ("abc", not_a_number)}
        for label, (value, (code, message)) in values.items():
            if command == "train":
                shape = [a for pair in zip(TINY[::2], TINY[1::2]) if pair[0] != option for a in pair]
                argv = ("train", "corpus.txt", "--out", "ck", *shape, *context, option, value)
                setup, check = corpus(), (samples() if code == 0 else None)
            else:
                base = [a for pair in (("--length", "20"), ("--seed", "1")) if pair[0] != option for a in pair]
                argv = ("sample", "ck", *base, *context, option, value)
                setup, check = checkpoint(), None
            cases.append(Case(f"{command}{option}-{label}", argv, code, message, setup, check=check))
    return cases


OPTION_CASES = [
    *option_cases("train", TRAIN_OPTIONS),
    *option_cases("sample", SAMPLE_OPTIONS),
    Case("sample--temperature-tiny", ("sample", "ck", "--length", "20", "--temperature", "5e-324"), 0, "",
         checkpoint()),
    Case("sample--top-p-above-one", ("sample", "ck", "--top-p", "1.5"), 2,
         r"--top-p must be greater than 0 and at most 1 \(1 = off\), got 1\.5", checkpoint()),
    Case("train--seq-len-longer-than-the-text", ("train", "corpus.txt", "--out", "ck", *SHAPE[:6], "--seq-len",
                                                "10000", "--max-steps", "2"), 2,
         r"the training text is \d+ tokens long, shorter than one training window \(--seq-len 10000\)", corpus()),
    Case("train--out-a-folder-of-other-files", train("corpus.txt", out="notes"), 2,
         r"notes exists and is not a textgen checkpoint", both(corpus(), folder_with_a_file("notes"))),
    Case("train--out-the-current-folder", train("corpus.txt", out="."), 2, r"exists and is not a textgen checkpoint",
         corpus()),
    Case("train--out-a-file", train("corpus.txt", out="notes.txt"), 2, r"notes\.txt is a file; choose another --out",
         both(corpus(), corpus("notes.txt", "my notes\n"))),
    Case("train--out-the-corpus-itself", train("corpus.txt", out="corpus.txt"), 2,
         r"corpus\.txt is a file; choose another --out", corpus()),
    Case("train--out-below-a-file", train("corpus.txt", out="corpus.txt/ck"), 2, r"corpus\.txt is a file", corpus()),
    Case("train--out-an-existing-checkpoint", train("corpus.txt"), 2,
         r"ck already holds a checkpoint; pass --overwrite", both(corpus(), checkpoint())),
    Case("train--device-nonsense", ("train", "corpus.txt", "--out", "ck", *TINY, "--device", "abacus"), 2,
         r"--device must be", corpus()),
    Case("sample--stop-empty", ("sample", "ck", "--stop", ""), 2, r"--stop needs a non-empty text", checkpoint()),
    Case("sample--prompt-unseen", ("sample", "ck", "--prompt", "日本"), 2, r"never saw: '日', '本'", checkpoint()),
    Case("sample--output-a-folder", ("sample", "ck", "--output", "ck"), 2, r"--output ck is a folder", checkpoint()),
    Case("evaluate-a-binary-file", ("evaluate", "ck", "picture.png"), 2, r"picture\.png looks binary",
         both(checkpoint(), generated_corpus("picture.png", tiny_png))),
    Case("evaluate-a-one-token-file", ("evaluate", "ck", "one.txt"), 2, r"one\.txt is too short to score",
         both(checkpoint(), corpus("one.txt", "a"))),
]


# Damaged checkpoints, each given to sample, evaluate, info and train --resume. A row: the
# damage, and the expected (code, message) for reading commands and for resume.
RESUME = ("train", "--resume", "ck", "--max-steps", "4")  # beyond the 2 steps the copy has done
READERS = {"sample": ("sample", "ck", "--length", "20"), "evaluate": ("evaluate", "ck"), "info": ("info", "ck")}
DAMAGED = refused(r"model\.safetensors is corrupt or does not match its config\.json")
# What resume should say is not written anywhere; naming the damaged file is the least it must do.
DAMAGED_FOR_RESUME = refused(r"model\.safetensors")

CHECKPOINT_DAMAGE = [
    ("empty-folder", lambda folder, built: (folder / "ck").mkdir(),
     refused(r"ck is not a textgen checkpoint \(it has no config\.json\)"), None),
    ("missing", nothing, refused(r"no such checkpoint: ck"), None),
    ("a-file", corpus("ck", PROSE), refused(r"ck is a file; a checkpoint is a directory"), None),
    ("config-not-json", checkpoint(damage=write_file("config.json", b'{"format": "textgen-checkpoint", "mod')),
     refused(r"ck/config\.json is corrupt"), None),
    ("config-not-utf-8", checkpoint(damage=write_file("config.json", b"\xff\xfe{\x00}")),
     refused(r"ck/config\.json is corrupt"), None),
    ("config-of-another-tool", checkpoint(damage=write_file("config.json", b'{"architectures": ["BertModel"]}')),
     refused(r"ck is not a textgen checkpoint \(config\.json is from something else\)"), None),
    ("newer-format-version", checkpoint(damage=edit_config(lambda c: c.update(format_version=2))),
     refused(r"ck has checkpoint format 2; this textgen reads format 1"), None),
    ("config-wrong-type", checkpoint(damage=edit_config(lambda c: c["model"].update(hidden_size="16"))),
     refused(r"ck/config\.json is corrupt: model\.hidden_size has the wrong type"), None),
    # A forged size must be refused before anything is allocated, not after asking for terabytes.
    ("config-huge-model", checkpoint(damage=edit_config(lambda c: c["model"].update(hidden_size=10**12))),
     refused(r"config\.json is corrupt"), None),
    ("missing-tokenizer", checkpoint(damage=remove_file("tokenizer.json")),
     refused(r"ck/tokenizer\.json: tokenizer file is missing"), None),
    ("word-tokenizer-in-a-char-checkpoint", checkpoint(damage=take_file_from("word", "tokenizer.json")),
     refused(r"ck/tokenizer\.json: expected a char tokenizer, found 'word'"), None),
    ("tokenizer-one-token-short", checkpoint(damage=drop_a_token),
     refused(r"ck is inconsistent: its tokenizer has \d+ tokens, its model \d+"), refused(r"tokenizer")),
    # train --resume reads the run's state from trainer.safetensors, but the README's promise is
    # about the whole folder: a damaged checkpoint is refused, and nothing of it is overwritten.
    ("weights-of-the-wrong-shape", checkpoint(damage=take_file_from("wide", "model.safetensors")), DAMAGED,
     DAMAGED_FOR_RESUME),
    ("truncated-weights", checkpoint(damage=truncate_file("model.safetensors")), DAMAGED, DAMAGED_FOR_RESUME),
    ("weights-header-claims-terabytes", checkpoint(damage=claim_terabytes("model.safetensors")), DAMAGED,
     DAMAGED_FOR_RESUME),
    ("missing-weights", checkpoint(damage=remove_file("model.safetensors")),
     refused(r"ck is an incomplete checkpoint: model\.safetensors is missing"),
     refused(r"model\.safetensors is missing")),
    ("config-says-gru-beside-lstm-weights", checkpoint(damage=edit_config(lambda c: c["model"].update(cell="gru"))),
     DAMAGED, refused(r"does not match")),
    # Sampling, evaluating and inspecting never read the run's state (README), so its damage
    # matters to --resume alone.
    ("trainer-state-truncated", checkpoint(damage=truncate_file("trainer.safetensors")), OK,
     refused(r"ck/trainer\.safetensors is corrupt")),
    ("trainer-state-claims-terabytes", checkpoint(damage=claim_terabytes("trainer.safetensors")), OK,
     refused(r"ck/trainer\.safetensors is corrupt")),
    ("trainer-state-of-another-model", checkpoint(damage=take_file_from("wide", "trainer.safetensors")), OK,
     refused(r"trainer state does not match its model")),
    ("trainer-state-missing", checkpoint(damage=remove_file("trainer.safetensors")), OK,
     refused(r"ck cannot be resumed: it has no trainer\.safetensors")),
]


def checkpoint_cases() -> list[Case]:
    cases = []
    for name, setup, (code, message), resume in CHECKPOINT_DAMAGE:
        for command, argv in READERS.items():
            cases.append(Case(f"{command}-{name}", argv, code, message, setup))
        resume_code, resume_message = resume or (code, message)
        cases.append(Case(f"resume-{name}", RESUME, resume_code, resume_message, setup))
    # metrics.jsonl is one line per validation; checkpoint.read_metrics skips a damaged line
    # ("costs one point of a chart, not the checkpoint"), so even bytes that are not UTF-8 must
    # still let every reader work.
    garbage_metrics = checkpoint(damage=write_file("metrics.jsonl", b'{"step": 1, "val_loss": 2.0}\n\xff\xfe junk\n{'))
    for command, argv in READERS.items():
        cases.append(Case(f"{command}-metrics-not-utf-8", argv, 0, "", garbage_metrics))
    cases += [
        Case("resume-gru-checkpoint-with--cell-lstm", ("train", "--resume", "ck", "--cell", "lstm"), 2,
             r"--cell cannot change when resuming", checkpoint("gru")),
        Case("resume-with--out", ("train", "--resume", "ck", "--out", "elsewhere"), 2,
             r"--out cannot change when resuming", checkpoint()),
        Case("resume-with-another-text", ("train", "other.txt", "--resume", "ck", "--max-steps", "4"), 2,
             r"other\.txt is not the text ck was trained on", both(checkpoint(), corpus("other.txt", PROSE * 2))),
        Case("resume--max-time-nan", ("train", "--resume", "ck", "--max-time", "nan"), 2,
             r"--max-time must be greater than 0 seconds", checkpoint()),
        Case("resume-at-its-limit", ("train", "--resume", "ck"), 2, r"ck already reached its limit at step 2",
             checkpoint()),
    ]
    return cases


RUN_CASES = [
    # A save killed by SIGKILL: readers load the whole checkpoint and ignore what the save left.
    Case("sample-beside-a-half-written-save", READERS["sample"], 0, "", killed_save(tmp=True)),
    Case("info-beside-a-half-written-save", READERS["info"], 0, "", killed_save(tmp=True)),
    Case("sample-killed-between-the-renames", READERS["sample"], 0, "",
         killed_save(tmp=True, old=True, keep_checkpoint=False)),
    Case("evaluate-killed-between-the-renames", READERS["evaluate"], 0, "",
         killed_save(tmp=True, old=True, keep_checkpoint=False)),
    Case("sample-killed-before-the-cleanup", READERS["sample"], 0, "", killed_save(old=True)),
    # A full disk while saving: one line, exit 2, the previous checkpoint as it was.
    Case("disk-full-writing-weights-over-a-checkpoint", ("train", "corpus.txt", "--out", "ck", "--overwrite", *TINY),
         2, r"could not save the checkpoint to ck: No space left on device; the previous checkpoint there is unchanged",
         both(corpus(), checkpoint()), patch=disk_full_at("safetensors.torch.save_model")),
    Case("disk-full-writing-weights-of-a-new-checkpoint", train("corpus.txt"), 2,
         r"could not save the checkpoint to ck: No space left on device", corpus(),
         patch=disk_full_at("safetensors.torch.save_model")),
    Case("disk-full-writing-the-tokenizer", ("train", "corpus.txt", "--out", "ck", "--overwrite", *TINY), 2,
         r"could not save the checkpoint to ck: No space left on device", both(corpus(), checkpoint()),
         patch=disk_full_at("textgen.tokenizers.base.TokenList.save")),
    Case("disk-full-saving-a-resumed-run", RESUME, 2, r"could not save the (checkpoint|training state) to ck: "
         r"No space left on device; the previous (checkpoint there|one there) is unchanged", checkpoint(),
         patch=disk_full_at("safetensors.torch.save_file")),
    # The disk can fill while the data is written or only when it is flushed: on file systems
    # that allocate late, fsync is where ENOSPC shows, and renaming an unflushed file over the
    # old one could leave neither. Only a folder's fsync may fail harmlessly (EINVAL).
    Case("disk-full-flushing-a-checkpoint", ("train", "corpus.txt", "--out", "ck", "--overwrite", *TINY), 2,
         r"No space left on device", both(corpus(), checkpoint()), patch=disk_full_at("os.fsync")),
    Case("disk-full-renaming-sample-output", ("sample", "ck", "--length", "20", "--output", "out.txt"), 2,
         r"could not write out\.txt: No space left on device",
         both(checkpoint(), corpus("out.txt", "earlier samples\n")), patch=disk_full_at("os.replace")),
    Case("disk-full-flushing-sample-output", ("sample", "ck", "--length", "20", "--output", "out.txt"), 2,
         r"could not write out\.txt: No space left on device",
         both(checkpoint(), corpus("out.txt", "earlier samples\n")), patch=disk_full_at("os.fsync")),
    # Ctrl-C at any point: "error: interrupted", exit 130, and (before training) nothing left behind.
    Case("interrupted-reading-the-corpus", train("corpus.txt"), 130, r"^error: interrupted$", corpus(),
         patch=interrupted_at("textgen.data.corpus.read_text_file")),
    Case("interrupted-reading-the-text-to-resume", RESUME, 130, r"^error: interrupted$", checkpoint(),
         patch=interrupted_at("textgen.data.corpus.read_text_file")),
    Case("interrupted-while-sampling", READERS["sample"], 130, r"^error: interrupted$", checkpoint(),
         patch=interrupted_at("textgen.api.TextModel.stream_samples")),
    Case("interrupted-while-evaluating", READERS["evaluate"], 130, r"^error: interrupted$", checkpoint(),
         patch=interrupted_at("textgen.evaluation.evaluate_text")),
    Case("interrupted-while-reading-metrics", READERS["info"], 130, r"^error: interrupted$", checkpoint(),
         patch=interrupted_at("textgen.checkpoint.read_metrics")),
]

CASES = [*CORPUS_CASES, *OPTION_CASES, *checkpoint_cases(), *RUN_CASES]


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.id, marks=[pytest.mark.skip(reason=case.skip_if[1])] if case.skip_if[0] else [])
     for case in CASES],
)
def test_hostile_input(case: Case, built: Built, run_cli: Callable[..., Outcome], tmp_path: Path) -> None:
    case.setup(tmp_path, built)
    before = snapshot(tmp_path)
    with pytest.MonkeyPatch.context() as patcher:  # undone before the files are read back
        if case.patch is not None:
            case.patch(patcher, tmp_path)
        outcome = run_cli(*case.argv)
    after = snapshot(tmp_path)
    assert_clean_outcome(outcome, case.code, case.message)
    # A refused or interrupted command leaves nothing behind, and reading never writes.
    assert_untouched(before, after, nothing_new=case.code != 0 or case.argv[0] in READERS)
    if case.check is not None:
        case.check(tmp_path, outcome, run_cli)


def test_the_table_has_every_case_it_should() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "case ids are unique"
    assert len(CORPUS_CASES) >= 25 and len(OPTION_CASES) >= 27 * 5 and len(CASES) >= 60


# --- runs: what a killed save left, cleaned up by the next one --------------------------------


def test_a_later_train_overwrite_removes_what_a_killed_save_left(
    built: Built, run_cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    both(corpus(), killed_save(tmp=True, old=True))(tmp_path, built)
    outcome = run_cli("train", "corpus.txt", "--out", "ck", "--overwrite", *TINY)
    assert_clean_outcome(outcome, 0, "")
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ck"))
    assert left == []
    samples()(tmp_path, outcome, run_cli)


def test_a_run_after_a_save_killed_between_its_renames_puts_the_previous_checkpoint_back(
    built: Built, run_cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    both(corpus(), killed_save(tmp=True, old=True, keep_checkpoint=False))(tmp_path, built)
    previous = snapshot(tmp_path / ".ck.old")
    # Without --overwrite the folder holds a checkpoint again, and a new run must not replace it.
    outcome = run_cli(*train("corpus.txt"))
    assert_clean_outcome(outcome, 2, r"ck already holds a checkpoint; pass --overwrite")
    assert snapshot(tmp_path / "ck") == previous
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ck")) == []
    samples()(tmp_path, outcome, run_cli)


# --- runs: a ten-million-character sample streams in constant memory --------------------------


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the child's memory from /proc")
def test_a_ten_million_character_sample_streams_in_constant_memory(built: Built, tmp_path: Path) -> None:
    """The sampler carries a fixed-size state, never the text so far. A tiny char model writes
    about 20,000 characters a second here, so ten million would take minutes: the child's
    resident memory is read once the stream is warm (32 KB out) and again 160 KB later, and it
    is killed. Growing by 8 MB in between would mean about 50 bytes kept per character."""
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "sample", str(built.char), "--length", "10000000", "--seed", "1"],
        cwd=tmp_path, env=process_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    received = 0
    readings = []
    try:
        for mark in (32_000, 192_000):
            while received < mark:
                chunk = process.stdout.read1(65536)
                assert chunk, process.stderr.read().decode("utf-8", errors="replace")
                received += len(chunk)
            readings.append(resident_kib(process.pid))
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    growth_kib = readings[1] - readings[0]
    assert growth_kib < 8 * 1024, f"resident memory grew {growth_kib} KiB over {received - 32_000} characters"


# --- runs: SIGINT and SIGTERM at random moments of a real training run ------------------------

_moments = random.Random(20261129)
# (signal, what the delay counts from, seconds): two moments counted from the start of textgen's
# own code (imports, reading the text, building the model) and two from the start of training.
SIGNAL_RUNS = [
    (signal.SIGINT, "start", round(_moments.uniform(0.0, 2.5), 2)),
    (signal.SIGTERM, "start", round(_moments.uniform(0.0, 2.5), 2)),
    (signal.SIGINT, "training", round(_moments.uniform(0.0, 1.5), 2)),
    (signal.SIGTERM, "training", round(_moments.uniform(0.0, 1.5), 2)),
]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum, anchor, delay", SIGNAL_RUNS,
                         ids=[f"{s.name}-{d}s-after-{a}" for s, a, d in SIGNAL_RUNS])
def test_a_signal_at_a_random_moment_exits_130_with_a_loadable_checkpoint_or_nothing(
    signum: signal.Signals, anchor: str, delay: float, run_cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    (tmp_path / "long.txt").write_text(PROSE * 200, encoding="utf-8")
    before = snapshot(tmp_path)
    args = ["train", "long.txt", "--out", "ck", *SHAPE, "--max-time", "60"]
    with TrainingProcess(args, tmp_path, process_env(tmp_path)) as run:
        if anchor == "training":
            run.wait_for_training()
        else:  # from the moment textgen's own code begins: imports, reading the text, building the model
            run.wait_for_start()
        time.sleep(delay)
        code = run.stop(signum)
    stderr, stdout = run.stderr, ANSI.sub("", run.stdout)

    assert "Traceback" not in stdout + stderr, stderr
    assert code == 130, f"exit {code}; stderr: {stderr!r}"
    assert stderr == "error: interrupted\n", stderr
    if (tmp_path / "ck" / "config.json").exists():
        samples()(tmp_path, Outcome(code, stdout, stderr), run_cli)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ck")) == []
    else:  # the signal came before training began: nothing may be left behind
        assert_untouched(before, snapshot(tmp_path), nothing_new=True)
