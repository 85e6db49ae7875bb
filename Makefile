# `make demo` and `make test` work on a fresh clone: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-pinned.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m hgn.demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check hgn tests benchmarks
	$(BIN)/ruff format --check hgn tests benchmarks

clean:
	rm -rf $(VENV) demo-output
