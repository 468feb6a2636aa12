"""SIGHUP with a publish schedule the scheduler refuses: refused, and the daemon runs on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, request, set_config_value
from tests.helpers.graphs import sample_nodes
from tests.helpers.notify_socket import NotifyListener

# Both pass the config parser's syntax check; the scheduler overflows on the first and cannot
# parse the second ("d" is no month name).
REFUSED_BY_THE_SCHEDULER = ["99999999999d", "a b c d e"]


@pytest.mark.slow
def test_a_schedule_the_scheduler_refuses_is_a_refused_reload_and_a_config_error_at_start(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20])
    daemons.append(daemon)
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon.start(env=listener.env)
        listener.until(lambda message: "READY=1" in message)
        client = daemon.client()
        assert daemon.process is not None
        for interval in REFUSED_BY_THE_SCHEDULER:
            set_config_value(daemon, "publish", "interval", interval)
            daemon.process.send_signal(signal.SIGHUP)
            listener.reload_done()
            assert request(client, {"op": "status"})["ok"], daemon.log.read_text()
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        listener.close()
    log = daemon.log.read_text()
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == len(REFUSED_BY_THE_SCHEDULER), log
    for line, interval in zip(refused, REFUSED_BY_THE_SCHEDULER, strict=True):
        assert f"keeping the running config: config: publish.interval: {interval!r}" in line
    assert "Traceback" not in log

    # The config file still holds the last refused value: a restart says so, in one line.
    daemon.log.write_text("")
    daemon.start()
    assert daemon.process.wait(timeout=120) == 2
    lines = [line for line in daemon.log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("amygdala-daemon: error: config: publish.interval: 'a b c d e'")
