"""Where the training text comes from: a user's file or a named corpus (built in, or downloaded once
into a cache and checked against its hash), and finding a checkpoint's text again.

Every problem a user can fix (a missing, binary or mis-encoded file, no network
for a download) becomes a one-line TextgenError that names the file.
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from textgen import config
from textgen.config import SettingError
from textgen.checkpoint import atomic
from textgen.checkpoint.records import CorpusRecord
from textgen.data.split import split_text
from textgen.errors import TextgenError


@dataclass
class Corpus:
    """A text ready to tokenize, with enough provenance to recognise it again."""

    text: str
    source: str  # what the user typed: a path or a corpus name
    name: str | None  # the named corpus, or None for a plain file
    path: Path | None  # absolute path of the file read; None for the built-in python-docs
    sha256: str  # of text.encode("utf-8"), so files and built-ins are identified the same way
    encoding: str = "utf-8"


@dataclass(frozen=True)
class KnownCorpus:
    description: str
    url: str | None  # None: built into textgen, nothing to download
    sha256: str | None  # of the downloaded file; None where the text follows the running Python
    size: int | None  # bytes
    licence: str


KNOWN_CORPORA: dict[str, KnownCorpus] = {
    "python-docs": KnownCorpus(
        description="the documentation topics every CPython ships (pydoc_data), about 465 KB of English prose",
        url=None,
        sha256=None,
        size=None,
        licence="PSF licence; from the CPython documentation",
    ),
    "shakespeare": KnownCorpus(
        description="tiny Shakespeare: 40,000 lines of Shakespeare's plays, the classic character-level benchmark",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
        licence="public-domain text; the data file of karpathy/char-rnn",
    ),
}

_CHUNK_BYTES = 1 << 16


def load_corpus(source: str | None, encoding: str = "utf-8") -> Corpus:
    """Read `source`: an existing file if there is one, else a named corpus (None means the default).

    `encoding` applies to files only; the named corpora are known to be UTF-8.
    """
    if source is None:
        source = config.DEFAULT_CORPUS
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know
        path = Path(source)
    # A file wins over a name, so a user's own file called "shakespeare" is never shadowed.
    if source and _exists(path):
        text = read_text_file(path, encoding)
        return Corpus(text, source, None, path.resolve(), _sha256_of_text(text), encoding)
    if source in KNOWN_CORPORA:
        return load_named_corpus(source)
    raise TextgenError(f"no such file or known corpus: {source} (known corpora: {_known_names()})")


def load_named_corpus(name: str) -> Corpus:
    """A corpus from the registry, whatever files the current folder holds."""
    if name == "python-docs":
        text = _python_docs_text()
        return Corpus(text, name, name, None, _sha256_of_text(text))
    if name not in KNOWN_CORPORA:
        raise TextgenError(f"unknown corpus: {name} (known corpora: {_known_names()})")
    cached = fetch_corpus(name)
    text = read_text_file(cached)
    return Corpus(text, name, name, cached, _sha256_of_text(text))


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """The file's text, decoded strictly, without a leading BOM and with its newlines untouched."""
    try:
        # Decoding a sample also rejects codecs that exist but are not text encodings (hex, base64);
        # b"" would not do, Python skips the codec lookup for it.
        b"a".decode(encoding)
    except UnicodeError:
        pass  # a real text encoding that cannot decode one lone byte (UTF-16, UTF-32)
    except (LookupError, ValueError):  # ValueError: a name no codec could have (a NUL inside it)
        raise TextgenError(f"unknown encoding: {encoding}") from None
    codec_name = codecs.lookup(encoding).name
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise TextgenError(f"no such file: {path}") from None
    except OSError as error:
        # Checked here rather than up front: Windows reports a directory as PermissionError.
        if path.is_dir():
            raise TextgenError(f"{path} is a directory, not a text file") from None
        if isinstance(error, PermissionError):
            raise TextgenError(f"cannot read {path}: permission denied") from None
        raise TextgenError(f"cannot read {path}: {error.strerror or error}") from None

    # In UTF-16/32 NUL bytes are ordinary; everywhere else one means an image, archive or model file,
    # and saying so beats reporting the first undecodable byte of it.
    wide = codec_name.startswith(("utf-16", "utf-32"))
    if not wide and (nul := data.find(b"\x00")) >= 0:
        if wide_text := _wide_encoding(data):
            raise SettingError(f"{path} looks like {wide_text.upper()} text, not {encoding} (NUL byte at offset {nul}); "
                               f"pass {{encoding}} {wide_text}", "encoding")
        raise TextgenError(f"{path} looks binary (NUL byte at offset {nul})")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        label = "UTF-8" if codec_name == "utf-8" else encoding
        # A codec may decode a tail of the data (utf-8-sig, past its BOM), and count from there.
        offset = error.start + len(data) - len(error.object) if data.endswith(error.object) else error.start
        raise SettingError(
            f"{path} is not valid {label}: bad byte 0x{error.object[error.start]:02x} at byte offset {offset}; "
            "pass {encoding} if it uses another encoding", "encoding"
        ) from None
    except UnicodeError as error:  # codecs such as punycode report bad input without a position
        raise TextgenError(f"{path} is not valid {encoding}: {str(error).splitlines()[0]}") from None
    if wide and (nul := text.find("\x00")) >= 0:
        raise TextgenError(f"{path} looks binary (NUL character at character offset {nul})")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise TextgenError(f"{path} is empty")
    return text


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _wide_encoding(data: bytes) -> str | None:
    """The UTF-16 or UTF-32 encoding `data` reads as plain text in, if any: such a file is full of
    NUL bytes, and calling it binary would hide the one option that reads it."""
    sample = data[:4096]
    bom = next((name for mark, name in _WIDE_BOMS if sample.startswith(mark)), None)
    for name in (bom,) if bom else ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        try:
            text = codecs.getincrementaldecoder(name)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        # Binary data decodes too, now and then, but not without NULs or control characters; and
        # without a BOM to go by, only text mostly of the first 256 code points has NUL bytes to explain.
        if (text.strip("\ufeff") and not any(c < " " and c not in "\t\n\r\f" for c in text)
                and (bom or sum(c < "\u0100" for c in text) >= len(text) / 2)):
            return name
    return None


def recorded_corpus(record: CorpusRecord, why: str) -> Corpus:
    """The corpus a checkpoint was trained on, provided it is still where it was and unchanged;
    `why` finishes the error messages ("give a FILE to evaluate")."""
    source = record.name or record.path
    if not source:
        raise with_hint("this checkpoint does not say where its training text is", why)
    try:
        if record.name:
            corpus = load_named_corpus(record.name)
        else:
            encoding = record.encoding or "utf-8"
            text = read_text_file(Path(source), encoding)
            corpus = Corpus(text, record.source or source, None, Path(source), _sha256_of_text(text), encoding)
    except TextgenError as error:
        raise _unreadable(error, why) from None
    if corpus.sha256 != record.sha256:
        raise with_hint(f"the training text {source} has changed since training", why)
    return corpus


def _unreadable(error: TextgenError, why: str) -> SettingError:
    """The error that reading a checkpoint's training text met, with the caller's hint; any setting
    it names is left for the front end to word."""
    inner, fields = (error.template, error.fields) if isinstance(error, SettingError) else (str(error), ())
    hinted = with_hint(f"the training text can no longer be read ({inner})", why)
    return SettingError(hinted.template, *fields, *hinted.fields)


def with_hint(problem: str, why: str) -> SettingError:
    """`problem`, then the caller's hint of what to do, in which a setting is written {field} (as in
    "give the training text as {corpus}"), so each front end names it its own way."""
    return SettingError(f"{problem}; {why}", *re.findall(r"\{(\w+)\}", why))


def held_out_text(record: CorpusRecord, why: str) -> tuple[str, str, str]:
    """(text just before the held-out part, the held-out part, a description) of the corpus a
    checkpoint was trained on, provided that text is still where it was and unchanged; `why`
    finishes the error messages, in the caller's words ("give a FILE to evaluate")."""
    if (record.name or record.path) and record.val_fraction <= 0:
        hinted = with_hint("this model was trained with no held-out text ({val_fraction} 0)", why)
        raise SettingError(hinted.template, "val_fraction", *hinted.fields)
    corpus = recorded_corpus(record, why)
    train, held_out = split_text(corpus.text, record.val_fraction, record.documents)
    return train, held_out, f"the held-out last {record.val_fraction:g} of {record.name or record.path}"


def corpus_cache_dir() -> Path:
    """$TEXTGEN_CACHE_DIR, else $XDG_CACHE_HOME/textgen, else ~/.cache/textgen; corpora go in its corpora/."""
    if explicit := os.environ.get("TEXTGEN_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "textgen"
    return Path.home() / ".cache" / "textgen"


def fetch_corpus(
    name: str, url: str | None = None, cache_dir: Path | None = None, timeout: float = 30.0
) -> Path:
    """The cached file of a downloadable corpus, downloading and verifying it the first time.

    `cache_dir` is the cache root (default corpus_cache_dir()); the file is <cache_dir>/corpora/<name>.txt.
    The url is `url`, else $TEXTGEN_<NAME>_URL, else the registry's; whichever it is, the hash must match.
    """
    known = KNOWN_CORPORA.get(name)
    if known is None:
        raise TextgenError(f"unknown corpus: {name} (known corpora: {_known_names()})")
    if known.url is None:
        raise TextgenError(f"{name} is built into textgen; there is nothing to download")
    target = (cache_dir if cache_dir is not None else corpus_cache_dir()) / "corpora" / f"{name}.txt"
    if _exists(target):
        _check_cached_file(name, target, known)
        return target

    url = url or os.environ.get(_url_variable(name)) or known.url
    by_hand = f"download it yourself and save it as {target}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TextgenError(f"cannot write to the corpus cache {target.parent}: {error.strerror or error}") from None
    try:
        # A failed or partial download leaves nothing behind, and never a half file at `target`.
        with atomic.replacing(target) as temporary, open(temporary, "wb") as out:
            digest = _download(url, out, timeout, known.size, name, by_hand)
            if digest != known.sha256:
                raise TextgenError(
                    f"downloaded {name} from {url} but its SHA-256 is {digest}, expected {known.sha256}; {by_hand}"
                )
    except OSError as error:  # writing the cache, not the network: _download wraps those
        raise TextgenError(f"could not save {name} to {target}: {error.strerror or error}") from None
    return target


def _download(url: str, out: BinaryIO, timeout: float, max_bytes: int | None, name: str, by_hand: str) -> str:
    """Stream `url` into `out` and return its SHA-256 hex; network failures become TextgenError."""

    def failed(reason: str) -> TextgenError:
        return TextgenError(f"could not download {name} from {url} ({reason}); {by_hand}")

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
        raise failed(_reason(error, timeout)) from None
    digest = hashlib.sha256()
    received = 0
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                raise failed(_reason(error, timeout)) from None
            if not chunk:
                return digest.hexdigest()
            received += len(chunk)
            # A wrong url could point at something huge; stop once it cannot be the right file.
            if max_bytes is not None and received > max_bytes:
                raise failed(f"the server sent more than the expected {max_bytes:,} bytes")
            digest.update(chunk)
            out.write(chunk)


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _check_cached_file(name: str, path: Path, known: KnownCorpus) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as cached:
            while chunk := cached.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as error:
        raise TextgenError(f"cannot read the cached {name} at {path}: {error.strerror or error}") from None
    if digest.hexdigest() != known.sha256:
        raise TextgenError(
            f"the cached {name} at {path} has SHA-256 {digest.hexdigest()}, expected {known.sha256}; "
            "it was changed or damaged: delete it and textgen will download it again"
        )


def _python_docs_text() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise TextgenError(
            "the built-in corpus python-docs needs the pydoc_data module, which this Python lacks "
            "(some Linux distributions remove it); pass a text file instead"
        ) from None
    # Sorted keys make the text, and so its hash, the same on every run of one Python version.
    return "\n\n".join(topics[key].rstrip() for key in sorted(topics))


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()  # a dangling link is reported by read_text_file
    except OSError:
        return True  # e.g. a parent without search permission: let read_text_file explain it


def _url_variable(name: str) -> str:
    return f"TEXTGEN_{name.upper().replace('-', '_')}_URL"


def _known_names() -> str:
    return ", ".join(KNOWN_CORPORA)


def _sha256_of_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
