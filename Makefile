# imharmony: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

RUNTIME := $(VENV)/.runtime

# the runtime dependencies only: all `make demo` needs
$(RUNTIME): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q src  # an editable install compiles nothing: byte-code now, not per run
	@touch $(RUNTIME)

# the test extra on top, for `make test`
$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(RUNTIME)
	$(BIN)/imharmony demo --output demo-output

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0  # CPU build, for torchio (see benchmarks/README.md)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_combat.py
	$(BIN)/python benchmarks/bench_imaging.py
	$(BIN)/python benchmarks/bench_histogram.py
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_convert.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache build src/*.egg-info
