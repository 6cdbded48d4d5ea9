# rnnforge: `make demo` runs every model end to end; `make test` runs the test suite.
# Both create .venv (python3 -m venv) and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

demo: install
	$(BIN)/rnnforge demo

test: install
	$(BIN)/python -m pytest --durations=15

# The inner loop: unit and in-process tests, no Ray cluster, no multi-epoch training.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" --durations=15

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache
