"""Checks on files the commands write (`sample --output`, `evaluate --html`), made before any work."""

from __future__ import annotations

import os
from pathlib import Path

from textgen.errors import TextgenError


def check_output_file(path: Path, option: str) -> None:
    """Refuse a file `option` names that cannot be written or is not a plain file."""
    if path.is_dir():
        raise TextgenError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise TextgenError(f"{option} {path} is not a regular file")
    folder = path.parent
    if not folder.is_dir():
        raise TextgenError(f"{option} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TextgenError(f"{option} {path}: the folder {folder} is not writable")
