"""The tests against a real vLLM engine: only in the vLLM venv (`make test-vllm`).

vLLM cannot be installed beside the project's main venv (it pins transformers), so where it is
absent these tests are not collected at all.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.vllm_plugin.support import smollm2_dir

collect_ignore_glob = ["test_*.py"] if importlib.util.find_spec("vllm") is None else []


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smollm2_dir(tmp_path_factory.mktemp("smollm2"))
