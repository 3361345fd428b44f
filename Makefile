# superbench developer entry points. Everything runs inside $(VENV), created by `make setup`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH=) to keep the torch you already have.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench lint report clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/superbench data demo
	$(BIN)/superbench run --upstream fbank --task all --data demo
	$(BIN)/superbench run --upstream hubert-tiny-random --task all --data demo
	$(BIN)/superbench leaderboard

bench: setup
	$(BIN)/python benchmarks/bench.py

lint: setup
	$(BIN)/ruff check superbench upstreams downstreams recipes leaderboard tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
