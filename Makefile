PY ?= .venv/bin/python

.PHONY: all test lint types format

all: lint types test

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check amygdala_daemon tests benchmarks
	$(PY) -m ruff format --check amygdala_daemon tests benchmarks

types:
	$(PY) -m mypy

format:
	$(PY) -m ruff format amygdala_daemon tests benchmarks
	$(PY) -m ruff check --fix amygdala_daemon tests benchmarks
