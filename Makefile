PY ?= .venv/bin/python

.PHONY: all test test-fast lint types format

all: lint types test

test:
	$(PY) -m pytest -q

# Everything but the real model, daemon subprocesses and other long runs: minutes, not ten.
test-fast:
	$(PY) -m pytest -q -m "not slow"

lint:
	$(PY) -m ruff check amygdala_daemon tests benchmarks
	$(PY) -m ruff format --check amygdala_daemon tests benchmarks

types:
	$(PY) -m mypy

format:
	$(PY) -m ruff format amygdala_daemon tests benchmarks
	$(PY) -m ruff check --fix amygdala_daemon tests benchmarks
