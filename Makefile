# superbench developer entry points. Everything runs inside $(VENV), created by `make setup`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH=) to keep the torch you already have.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench bench-scale gpu-check lint report clean reference-env test-reference families

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
	$(BIN)/superbench compare fbank hubert-tiny-random

# The reference environment for the s3prl equivalence tests (tests/test_s3prl_equivalence_*.py): s3prl 0.4.18
# needs torchaudio, whose newest PyPI build (2.9 here) loads only beside the CUDA build of the same torch;
# that build runs on a CPU machine too. It downloads a few GB once. The tests skip in the main venv.
REF_VENV ?= .venv-ref
REF_TORCH ?= torch==2.9.0 torchaudio==2.9.0

reference-env: $(REF_VENV)/.installed

$(REF_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(REF_VENV)/bin/python -m pip install -q $(REF_TORCH)
	$(REF_VENV)/bin/python -m pip install -q -e '.[s3prl]' pytest kaldi-native-fbank "$(word 1,$(REF_TORCH))"
	touch $@

test-reference: reference-env
	$(REF_VENV)/bin/python -m pytest -q -rA tests/test_s3prl_equivalence_*.py

bench: setup
	$(BIN)/python benchmarks/bench.py

# Every stage of a run at 1x, 4x and 16x corpus sizes (SID, PR, KS on synthetic corpora in the real layouts):
# wall time, peak RSS, growth exponents. Long; not part of `make test`. BENCH_SCALE_ARGS scales it down
# (e.g. --max-scale 4, --base sid=2000); the defaults make 16x the real corpus sizes.
BENCH_SCALE_ARGS ?=
bench-scale: setup
	$(BIN)/python benchmarks/bench_scale.py $(BENCH_SCALE_ARGS)

# The GPU path (demo on CUDA in fp32 and bf16, extraction vs bare forward, heads GPU vs CPU, pinned copies);
# on a machine without CUDA it says so and exits 0.
gpu-check: setup
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh

# Every self-supervised family pretrained small on the demo corpus, scored against its own random init
# (families/families.md and .html, leaderboard.md, report.html; 40 min on two cores, resumable).
families: setup
	$(BIN)/superbench families --out families

# The HTML report of the store, and (when Debian's chromium is there) a headless screenshot of it.
report: setup
	$(BIN)/superbench report -o report.html
	@if command -v chromium >/dev/null; then \
		chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=$$(mktemp -d) \
			--screenshot=$(CURDIR)/report.png --window-size=1400,2000 file://$(CURDIR)/report.html 2>/dev/null \
			&& echo "screenshot: report.png"; \
	else echo "chromium not found: no screenshot"; fi

lint: setup
	$(BIN)/ruff check superbench upstreams downstreams recipes leaderboard tests benchmarks

clean:
	rm -rf $(VENV) $(REF_VENV) build *.egg-info .pytest_cache
