# `make demo` and `make test` work on a fresh clone: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-pinned.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m hgn.demo

test: setup browser
	$(BIN)/python -m pytest
	$(BIN)/ruff check hgn tests benchmarks

# The report test renders report.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: could not install chromium; the report rendering test will be skipped"

lint: setup
	$(BIN)/ruff check hgn tests benchmarks
	$(BIN)/ruff format --check hgn tests benchmarks

clean:
	rm -rf $(VENV) demo-output
