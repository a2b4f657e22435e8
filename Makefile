# make demo: set up, train a small model on the built-in corpus for about a minute, print a sample.
# make test: set up, run the test suite.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test benchmark clean

setup:
	@VENV=$(VENV) ./scripts/setup.sh

demo: setup
	$(BIN)/textgen train --max-time 60 --out checkpoints/demo --overwrite
	$(BIN)/textgen sample checkpoints/demo --prompt "The " --length 400 --seed 7

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
