# rnnforge: `make demo` runs every model end to end; `make test` runs the test suite.
# Both create .venv (python3 -m venv) and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/rnnforge demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache
