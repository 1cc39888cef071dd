# `make test` and `make demo` are all a new user needs: each builds .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-fast demo lint bench clean lock

# The locked versions first (requirements/test-lock.txt: every dependency and test tool,
# pinned), then the project itself without resolving anything again.
$(BIN)/.installed: pyproject.toml requirements/test-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/test-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Regenerate the locks from pyproject.toml, against PyPI alone, for every Python from 3.10
# (markers keep what only some need). requirements/lock.txt serves the Docker image; the
# test lock holds the same versions plus the test extra.
UV_COMPILE = UV_NO_CONFIG=1 $(BIN)/uv pip compile pyproject.toml --universal \
	--python-version 3.10 --index-url https://pypi.org/simple --quiet
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) --custom-compile-command 'make lock' -o requirements/lock.txt
	$(UV_COMPILE) --custom-compile-command 'make lock' --extra test \
		-c requirements/lock.txt -o requirements/test-lock.txt

# The whole suite: tests/unit and tests/integration (real Redis, workers, beat, PostgreSQL,
# the commands in fresh processes), about 10 minutes on 2 cores.
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Everything not marked slow: the unit tests, about 10 seconds, with no service running and
# no process started (everything under tests/integration is slow: not even collected here).
test-fast: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" tests/unit

demo: $(BIN)/.installed
	$(BIN)/kraken-pay demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed
	$(BIN)/python bench/client.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
