"""SIGHUP with a new `server.port`: refused as needing a restart, the websocket stays put.

A reload that logged success while the daemon kept its old port would leave `publish` from
the CLI, which reads the new port from the file, talking to nobody.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, free_port, request, set_config_value, wait_for
from tests.helpers.graphs import sample_nodes


@pytest.mark.slow
def test_a_new_port_is_refused_and_the_running_address_keeps_answering(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20])
    daemons.append(daemon)
    daemon.start()
    client = daemon.client()
    old_port, new_port = daemon.port, free_port()
    set_config_value(daemon, "server", "port", new_port)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    # The log, not NOTIFY_SOCKET, marks the reload: a listener that stopped reading would
    # fill its buffer and stall the daemon's status messages.
    wait_for(lambda: "reload refused" in daemon.log.read_text() or None, 60, "the reload")
    # The running address still answers, on the connection made before and on a new one.
    assert request(client, {"op": "status"})["ok"]
    assert request(daemon.client(), {"op": "status"})["ok"]
    # Put back, the file matches what runs: the CLI reaches the daemon through it.
    set_config_value(daemon, "server", "port", old_port)
    published = subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(daemon.config), "publish"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert published.returncode == 0, published.stderr
    assert "by the daemon" in published.stdout or "nothing changed" in published.stdout
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 1, log
    needs_restart = f"server.port: changed from {old_port} to {new_port}: that needs a restart"
    assert needs_restart in refused[0]
    assert "configuration reloaded" not in log
    assert "Traceback" not in log
