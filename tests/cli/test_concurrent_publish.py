"""`publish` from the CLI beside other writers: CLI writers wait their turn, only the daemon
is asked over the websocket, and a daemon still starting is given time to answer."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amygdala_daemon.store.lock import lock_owner
from tests.helpers.daemon import DaemonProcess
from tests.helpers.graphs import config_toml, sample_nodes

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def publish_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "amygdala_daemon", "--config", str(config), "publish", "--force"]


@pytest.mark.slow
@pytest.mark.timeout(600)  # twenty interpreters loading torch on a shared machine
def test_twenty_concurrent_publishes_each_publish_and_none_asks_a_daemon(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            {
                "state_dir": str(tmp_path / "state"),
                "source": {"kind": "jsonl", "path": str(graph_path)},
                "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
            }
        )
    )
    once = subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert once.returncode == 0, once.stderr
    writers = [
        subprocess.Popen(
            publish_command(config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(20)
    ]
    results = [(writer.communicate(timeout=600), writer.returncode) for writer in writers]
    generations = []
    for (stdout, stderr), code in results:
        assert code == 0, stderr
        assert "the daemon" not in stdout + stderr, stderr
        found = re.fullmatch(r"published \S+gen-(\d+)\n", stdout)
        assert found is not None, stdout
        generations.append(int(found.group(1)))
    # One after the other: generation 1 came from `run --once`, then one each.
    assert sorted(generations) == list(range(2, 22))


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_publish_waits_for_a_daemon_that_is_still_starting(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20])
    daemons.append(daemon)
    daemon.start()
    assert daemon.process is not None
    deadline = time.monotonic() + 120
    while not ((owner := lock_owner(daemon.state)) and owner.daemon):
        assert daemon.process.poll() is None and time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.001)
    # Held between taking the lock and opening the websocket: the start, frozen.
    daemon.process.send_signal(signal.SIGSTOP)
    try:
        assert refused(daemon.port), "the websocket is not open yet"
        with subprocess.Popen(
            publish_command(daemon.config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            stdin=subprocess.DEVNULL,
        ) as publish:
            time.sleep(5)  # long enough for the CLI to start and meet the closed port
            assert publish.poll() is None, publish.communicate()
            daemon.process.send_signal(signal.SIGCONT)
            stdout, stderr = publish.communicate(timeout=300)
    finally:
        daemon.process.send_signal(signal.SIGCONT)
    assert publish.returncode == 0, stderr
    assert f"(by the daemon, pid {daemon.process.pid})" in stdout
    assert daemon.stop() == 0
