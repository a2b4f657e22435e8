"""Reading a big corpus a block at a time: the files of a folder or a glob in a stable order, each
decoded strictly and incrementally, so a gigabyte of text never sits in memory whole. A bad byte
is still a one-line error naming the file and its byte offset, as for a small file."""

from __future__ import annotations

import codecs
import glob
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from textgen.config import SettingError
from textgen.errors import TextgenError

BLOCK_BYTES = 4 << 20
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".html", ".htm", ".srt",
                 ".tex", ".org", ".lrc", ".py", ".c", ".h", ".js", ".ts", ".java", ".rs", ".go", ".log", ""}


@dataclass(frozen=True)
class CorpusFiles:
    """The files a corpus argument names, in the order they are read."""

    source: str  # as the user gave it
    paths: tuple[Path, ...]
    encoding: str = "utf-8"

    @property
    def source_is_file(self) -> bool:
        return len(self.paths) == 1 and Path(self.source).expanduser().is_file()

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def fingerprint(self) -> str:
        """A hash of every file's bytes and name: the id cache's key for this input."""
        digest = hashlib.sha256(self.encoding.encode())
        for path in self.paths:
            digest.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
            with open(path, "rb") as handle:
                while block := handle.read(BLOCK_BYTES):
                    digest.update(block)
            digest.update(b"\0")
        return digest.hexdigest()


def find_files(source: str, encoding: str = "utf-8") -> CorpusFiles | None:
    """The files of a folder (recursively, sorted by path, text files only) or of a glob pattern;
    None when `source` is neither (a single file or a corpus name)."""
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know
        path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise TextgenError(f"{path} holds no text files (.txt, .md, ... or no suffix)")
        return CorpusFiles(source, tuple(found), encoding)
    if glob.has_magic(source):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise TextgenError(f"no files match {source}")
        return CorpusFiles(source, tuple(found), encoding)
    return None


def read_blocks(files: CorpusFiles) -> Iterator[tuple[Path, str, int]]:
    """(file, decoded text, bytes read so far in all files) a block at a time; a file's BOM is
    dropped, and a binary or mis-encoded file is a TextgenError naming the byte offset."""
    codec = _codec(files.encoding)
    done = 0
    for path in files.paths:
        decoder = codecs.getincrementaldecoder(files.encoding)(errors="strict")
        wide = codec.name.startswith(("utf-16", "utf-32"))
        offset, first, empty = 0, True, True
        try:
            handle = open(path, "rb")
        except OSError as error:
            raise TextgenError(f"cannot read {path}: {error.strerror or error}") from None
        with handle:
            while True:
                block = handle.read(BLOCK_BYTES)
                last = not block
                if not wide and (nul := block.find(b"\x00")) >= 0:
                    raise TextgenError(f"{path} looks binary (NUL byte at offset {offset + nul})")
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(block, final=last)
                except UnicodeDecodeError as error:
                    label = "UTF-8" if codec.name == "utf-8" else files.encoding
                    at = offset - pending + error.start
                    raise SettingError(f"{path} is not valid {label}: bad byte 0x{error.object[error.start]:02x} at "
                                       f"byte offset {at}; pass {{encoding}} if it uses another encoding",
                                       "encoding") from None
                offset += len(block)
                done += len(block)
                if first and text:
                    text, first = text.removeprefix("\ufeff"), False
                if text:
                    empty = empty and not text.strip()
                    yield path, text, done
                if last:
                    break
        if empty:
            raise TextgenError(f"{path} is empty")


def _codec(encoding: str) -> codecs.CodecInfo:
    try:
        b"a".decode(encoding)
    except UnicodeError:
        pass
    except (LookupError, ValueError):
        raise TextgenError(f"unknown encoding: {encoding}") from None
    return codecs.lookup(encoding)
