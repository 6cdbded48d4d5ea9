# rnnforge: `make demo` runs every model end to end; `make test` runs the test suite.
# Both create .venv (python3 -m venv) and install the project into it first.
# rnnforge needs Python 3.10, 3.11 or 3.12 (TensorFlow 2.21 and Ray 2.60 wheels): pick one with
# `make demo PYTHON=python3.11`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast test-slow lint install clean docs transcript

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
		|| { echo "error: rnnforge needs Python 3.10, 3.11 or 3.12; '$(PYTHON)' is $$($(PYTHON) -V 2>&1 | grep -o 'Python .*' || echo 'not found'): pick one, e.g. make demo PYTHON=python3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

demo: install
	$(BIN)/rnnforge demo

# Two workers: the tests that start Ray run one after another in one of them (the `ray` mark,
# tests/conftest.py), everything else is shared out test by test, in the order conftest collects
# them (its FIRST_GROUPS lead) rather than xdist's largest-group-first.
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest $(XDIST) --durations=15

# The inner loop, under 2 minutes: unit and in-process tests (no Ray cluster, no test that trains,
# exports or benches a model of its own beyond the shared fixtures, no test whose point is a fresh
# process).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not process" --durations=15

# The rest of `make test` (Ray runs, training, export and bench runs, fresh processes): test-fast and
# test-slow together are the whole suite, so CI can run them as two parallel jobs.
test-slow: install
	$(BIN)/python -m pytest $(XDIST) -m "slow or process" --durations=15

# docs/cli.md from the click commands (tests/test_docs.py fails when it is stale).
docs: install
	$(BIN)/python -m rnnforge.docs_cli

# Run the demo and rewrite the README's transcript block from its output.
transcript: install
	$(BIN)/python -m rnnforge.transcript

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
