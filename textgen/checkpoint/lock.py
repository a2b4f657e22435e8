"""One training run per checkpoint folder: an advisory lock held beside it for the whole run.

Two runs on the same `--out` would each save over the other; the second is refused at once,
in one line naming the first. The lock is the operating system's (flock on POSIX, a byte-range
lock on Windows), so it dies with its process: a run killed by SIGKILL or a power cut leaves a
lock file that the next run simply takes over. The file sits beside the checkpoint, not in it,
because a save replaces the whole checkpoint folder by renaming.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textgen.config import SettingError
from textgen.errors import TextgenError

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def lock_file(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint).absolute()
    return checkpoint.parent / f".{checkpoint.name}.lock"


@contextmanager
def run_lock(checkpoint: Path) -> Iterator[None]:
    """Hold the training lock of `checkpoint` for the block; TextgenError if another run holds it
    (a second holder in this same process too: a run takes it once, in textgen.api)."""
    path = lock_file(checkpoint)
    made = _make_folders(path.parent)
    try:
        fd = _acquire(path, Path(checkpoint))
    except BaseException:
        _remove_if_empty(made)
        raise
    try:
        yield
    finally:
        _release(path, fd)
        _remove_if_empty(made)  # a run that saved nothing leaves no empty folders behind


def _make_folders(folder: Path) -> list[Path]:
    """Make `folder` and any missing parents; the ones made, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
    except OSError as error:
        _remove_if_empty(missing)
        raise TextgenError(f"cannot make {missing[0]}: {error.strerror or error}") from None
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): neither it nor its parents are ours to remove


def _acquire(path: Path, checkpoint: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise TextgenError(f"cannot lock {checkpoint} for training: {error.strerror or error}") from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise SettingError(f"{checkpoint} is being trained by another textgen run ({holder}); "
                               "wait for it to end, or choose another {out}", "out")
        # A run that was releasing may have removed the file we opened; a lock on a removed
        # file guards nothing, so open the path again.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _write_holder(fd)
    return fd


def _release(path: Path, fd: int) -> None:
    # Removed while still locked, so no other run can lock this file after we let go of it.
    try:
        path.unlink()
    except OSError:
        pass
    os.close(fd)


def _write_holder(fd: int) -> None:
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    record = f"process {os.getpid()} on {socket.gethostname()}, started {started}\n"
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode("utf-8"))
    except OSError:
        pass  # the lock holds without the note; only the message to a second run gets vaguer


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 500).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "a process that has not said which"
