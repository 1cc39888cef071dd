# `make test` and `make demo` are all a new user needs: each builds .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-fast demo lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

demo: $(BIN)/.installed
	$(BIN)/kraken-pay demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed
	$(BIN)/python bench/client.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
