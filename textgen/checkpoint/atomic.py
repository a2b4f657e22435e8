"""The one way textgen replaces a file or a folder: write the new one beside it, make it durable,
then rename it into place, so a crash or a full disk at any moment leaves the old one whole."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write the new file to; when the block succeeds it is
    flushed to disk and renamed over `path`, and when it fails it is removed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically; OSError if it cannot be written."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def replace_folder(new: Path, folder: Path, aside: Path) -> None:
    """Rename the complete folder `new` to `folder`, keeping the old one at `aside` between the two
    renames, so no instant exists where neither is whole on disk; then remove the old one."""
    if folder.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(folder, aside)
        try:
            os.replace(new, folder)
        except OSError:
            os.replace(aside, folder)  # put the old one back before reporting
            raise
    else:
        os.replace(new, folder)
    shutil.rmtree(aside, ignore_errors=True)  # also what a save killed between the renames left
    fsync(folder.parent)


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk. A file that cannot be flushed (a full disk,
    an I/O error) raises OSError: renaming it over the old one could lose both."""
    is_folder = Path(path).is_dir()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if is_folder:
            return  # some systems cannot open a folder for reading; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not is_folder:
            raise
        # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)
