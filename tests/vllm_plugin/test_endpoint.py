"""The OpenAI-compatible server as a user starts it, and `GET /v1/readouts/{id}` over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx  # type: ignore[import-not-found, unused-ignore]
import pytest

from amygdala_daemon.core.manifest import VECTORS_FILE, Release
from tests.vllm_plugin.support import ENGINE_ENV, assert_matches, hf_streams, publish

START_TIMEOUT_S = 400.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Release]]:
    published = tmp_path_factory.mktemp("published")
    release = publish(published, 1, 14, seed=3)
    port = free_port()
    env = {
        **os.environ,
        **ENGINE_ENV,
        "VLLM_READOUT_VECTORS": str(published / "current" / VECTORS_FILE),
        # vLLM loads endpoint plugins only when they are named here.
        "VLLM_PLUGINS": "amygdala_readout",
    }
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "smollm2", "--enforce-eager", "--dtype", "float32",
        "--max-model-len", "256", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = (tmp_path_factory.mktemp("server") / "server.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the server exited; see {log.name}"
            try:
                if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the server did not start; see {log.name}"
            time.sleep(2.0)
        yield base, release
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.timeout(600)
def test_completion_readout_over_http(server: tuple[str, Release], model_dir: Path) -> None:
    base, release = server
    body = {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5,
            "temperature": 0.0}  # fmt: skip
    completion = httpx.post(f"{base}/v1/completions", json=body, timeout=120.0).json()
    response = httpx.get(f"{base}/v1/readouts/{completion['id']}", timeout=30.0)
    assert response.status_code == 200, response.text
    readout = response.json()
    assert readout["generation"] == 1
    assert readout["layers"] == release.manifest["layers"]
    n_completion = completion["usage"]["completion_tokens"]
    assert readout["n_prompt_tokens"] == completion["usage"]["prompt_tokens"]
    assert len(readout["tokens"]) == readout["n_prompt_tokens"] + n_completion - 1
    assert set(readout["completion_mean"]) == set(release.manifest["concepts"])
    ids = [token["token_id"] for token in readout["tokens"]]
    assert_matches(readout, release, hf_streams(model_dir, ids))


@pytest.mark.timeout(120)
def test_unknown_id_is_404(server: tuple[str, Release]) -> None:
    base, _ = server
    response = httpx.get(f"{base}/v1/readouts/cmpl-nosuchrequest", timeout=30.0)
    assert response.status_code == 404
    assert "cmpl-nosuchrequest" in response.json()["error"]
