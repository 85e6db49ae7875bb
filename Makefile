# `make demo` and `make test` work on a fresh clone: they build .venv first, from the lock
# file, so that every machine tests with the same versions of everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
TORCH := torch==2.13.0
UV := uv==0.13.8

.PHONY: setup browser demo test quick test-exhaustive lint lock clean

setup: $(STAMP)

# torch first, so that pip takes the CPU build (found through pip's find-links on this
# project's machines) instead of resolving a multi-GB CUDA build; then exactly the
# versions of the lock and nothing else; then hgn itself. `pip check` fails if the lock
# misses something that pyproject.toml or a locked package needs (then: make lock).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

demo: setup
	$(BIN)/python -m hgn.demo

# On every core (pytest-xdist; PYTEST_XDIST_AUTO_NUM_WORKERS=N sets how many), a whole
# file at a time, so that a module's shared tiny runs and datasets are built once, in the
# order collected (tests/conftest.py puts the longest file, the reproduce smoke run, first).
PARALLEL := -n auto --dist loadfile --no-loadscope-reorder

test: setup browser
	$(BIN)/python -m pytest $(PARALLEL)
	$(BIN)/ruff check hgn tests benchmarks

# The inner loop: every test not marked `@pytest.mark.slow` (the marker is declared in
# pyproject.toml), in under a minute on two cores, stopping at the first failure.
quick: setup
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow and not exhaustive" -x -q

# The property tests of damaged stores and hostile options at 500 examples each (minutes;
# make test runs 25 of each).
test-exhaustive: setup
	$(BIN)/python -m pytest -m exhaustive tests/test_properties.py

# The report test renders report.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: could not install chromium; the report rendering test will be skipped"

lint: setup
	$(BIN)/ruff check hgn tests benchmarks
	$(BIN)/ruff format --check hgn tests benchmarks

# Regenerate the lock after changing the dependencies in pyproject.toml: every package
# that `pip install -e '.[dev]'` needs, pinned, for this venv's Python and the CPU build
# of $(TORCH). uv goes into a folder of its own, so the venv holds the lock and no more.
lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade --target $(VENV)/tools $(UV)
	echo '$(TORCH)' | $(VENV)/tools/bin/uv pip compile pyproject.toml --extra dev \
		--constraint - $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) \
		--python $(BIN)/python --custom-compile-command 'make lock' --quiet -o $(LOCK)

clean:
	rm -rf $(VENV) demo-output
