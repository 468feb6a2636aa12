"""limits.py: the publish budgets, and `[server]` settings checked against this process's limits."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.core.config import ServerConfig
from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.serving.limits import (
    FD_HEADROOM,
    PublishGate,
    TokenBucket,
    check_server_config,
    open_file_limit,
)
from tests.helpers.cli import one_error_line
from tests.helpers.daemon import DaemonProcess
from tests.helpers.graphs import sample_nodes


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_forced_publish_needs_the_token_and_its_interval() -> None:
    clock = Clock()
    gate = PublishGate(ServerConfig(force_publish_interval=60.0), clock)
    refused = gate.admit(force=True, authorized=False)
    assert refused is not None and "needs the current server token" in refused.error
    assert gate.admit(force=True, authorized=True) is None
    clock.now = 59.0
    assert gate.admit(force=True, authorized=True) is not None
    assert gate.admit(force=False, authorized=True) is None, "ordinary publishes go on"
    clock.now = 60.0
    assert gate.admit(force=True, authorized=True) is None


def test_zero_turns_each_limit_off() -> None:
    gate = PublishGate(ServerConfig(force_publish_interval=0.0, publish_requests_per_minute=0.0))
    assert all(gate.admit(force=True, authorized=True) is None for _ in range(100))


def test_a_refused_forced_publish_spends_nothing() -> None:
    clock = Clock()
    gate = PublishGate(ServerConfig(publish_requests_per_minute=2.0), clock)
    assert gate.admit(force=True, authorized=True) is None
    assert gate.admit(force=True, authorized=True) is not None  # too soon
    assert gate.admit(force=False, authorized=True) is None, "the bucket still had one"
    over = gate.admit(force=False, authorized=True)
    assert over is not None and over.retry_after == 30.0


def test_a_reloaded_rate_keeps_what_was_spent() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock)
    for _ in range(10):
        assert bucket.take() == 0.0
    bucket.resize(20.0)
    assert bucket.take() == 3.0, "nothing came back with the bigger bucket"
    bucket.resize(0.0)
    assert bucket.take() == 0.0


def test_origins_must_look_like_what_browsers_send() -> None:
    check_server_config(ServerConfig(allowed_origins=["http://localhost:3000", "https://a.b"]))
    for bad in ("http://localhost:3000/", "localhost:3000", "https://a.b/app", "null", ""):
        with pytest.raises(ConfigError) as refused:
            check_server_config(ServerConfig(allowed_origins=[bad]))
        assert str(refused.value).startswith("config: server.allowed_origins: "), bad
        assert repr(bad) in str(refused.value)


def test_connections_must_leave_descriptors_for_the_rest() -> None:
    limit = open_file_limit()
    if limit is None:
        pytest.skip("this process may open any number of files")
    check_server_config(ServerConfig(max_connections=limit - FD_HEADROOM))
    with pytest.raises(ConfigError) as refused:
        check_server_config(ServerConfig(max_connections=limit - FD_HEADROOM + 1))
    assert f"of the {limit} file descriptors" in str(refused.value)
    assert str(refused.value).startswith("config: server.max_connections: ")


@pytest.mark.slow
def test_a_daemon_under_a_low_open_file_limit_refuses_a_big_cap(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    daemon = DaemonProcess(
        tmp_path, tiny_model_dir, sample_nodes()[:5], server={"max_connections": 200}
    )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (256, {hard})); "
        "sys.argv = ['amygdala-daemon', *sys.argv[1:]]; "
        "runpy.run_module('amygdala_daemon', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", lowered, "--config", str(daemon.config), "run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "server.max_connections: 200 connections leave too few of the 256" in line
    assert "(at most 128;" in line
    assert not (daemon.state / "ledger.sqlite3").exists(), "refused before touching the state"
