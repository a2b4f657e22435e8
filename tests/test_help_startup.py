"""Tests that `textgen --help` loads no more than the commands' definitions: the drawing code and
the interactive loop wait until a command needs them (torch is pinned in test_layout.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HELP_THEN_MODULES = """
import sys
from textgen.cli import main
try:
    main(['--help'])
except SystemExit:
    pass
print(' '.join(sorted(sys.modules)))
"""


@pytest.mark.slow
def test_help_loads_neither_the_drawing_code_nor_the_interactive_loop():
    done = subprocess.run([sys.executable, "-c", HELP_THEN_MODULES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.splitlines()[-1].split())
    assert "textgen.cli.sample" in loaded  # the commands themselves are defined
    assert not {name for name in loaded if name.startswith("textgen.render")}
    assert "textgen.cli.interactive" not in loaded

