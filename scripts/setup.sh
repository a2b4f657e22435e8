#!/usr/bin/env bash
# Make a virtual environment in .venv with textgen and its test tools, from nothing but Python.
#
# PyTorch comes first and on its own: on a machine without a GPU a plain `pip install torch`
# can pull a CUDA build of several GB, so we take the CPU build where one is at hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if pip install --no-index --no-deps "torch==2.13.0" 2>/dev/null; then
        pip install "torch==2.13.0"  # the wheel came from this machine's disk; now its dependencies
    elif [ "$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
        pip install torch --index-url https://download.pytorch.org/whl/cpu  # CPU build, ~200 MB
    else
        pip install torch  # macOS wheels are CPU/MPS; a Linux machine with a GPU wants CUDA
    fi
fi
pip install -e ".[test]"
