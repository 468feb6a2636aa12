"""`amygdala-daemon run` as a real subprocess: watching, events, restarts, systemd notify."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers.daemon import DaemonProcess, next_event, request, wait_for
from tests.helpers.graphs import sample_nodes

# Each test starts a real daemon subprocess.
pytestmark = pytest.mark.slow


def test_watch_apply_retract_and_events(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()
    # It forces two publishes a few seconds apart: no spacing between them.
    daemon = DaemonProcess(
        tmp_path, tiny_model_dir, nodes[:150], server={"force_publish_interval": 0}
    ).start()
    daemons.append(daemon)
    client = daemon.client()
    wait_for(daemon.generation, what="the first generation")
    status = request(client, {"op": "status"})["status"]
    applied_before = status["nodes"]["applied"]
    assert status["backlog"] == 0 and applied_before > 100

    # Append: a new generation whose counts include the new nodes.
    with daemon.graph.open("a") as handle:
        handle.write("".join(json.dumps(n) + "\n" for n in nodes[150:200]))
    event = next_event(client, "node_applied")
    assert event["id"] in {n["id"] for n in nodes[150:200]}
    published = next_event(client, "published")
    assert published["concepts"] == 14 and Path(published["vectors"]).is_file()
    status = request(client, {"op": "status"})["status"]
    assert status["nodes"]["applied"] > applied_before

    # Edit and delete: retracted.
    victim, edited = nodes[10], nodes[11]
    content, _, tags = edited["text"].rpartition("\n")
    with daemon.graph.open("a") as handle:
        handle.write(json.dumps({"id": victim["id"], "deleted": True}) + "\n")
        handle.write(json.dumps({**edited, "text": f"{content} Then it changed.\n{tags}"}) + "\n")
    wait_for(
        lambda: (
            request(client, {"op": "status"})["status"]["ledger_seq"] > status["ledger_seq"] + 2
        ),
        what="the edit and the delete",
    )
    after = request(client, {"op": "status"})["status"]
    assert after["nodes"]["applied"] == status["nodes"]["applied"] - 1

    # Requests: malformed ones get an error and the connection stays open.
    assert request(client, {"op": "nope"})["ok"] is False
    client.send("{not json")
    assert json.loads(client.recv(timeout=10)) == {
        "ok": False,
        "error": "request is not valid JSON",
    }
    reply = request(client, {"op": "publish", "force": True})
    assert reply["ok"] and reply["published"] and reply["generation"] == daemon.generation()
    client.send("x" * 200_000)
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # events may still arrive before the close
            client.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    # A second writer is refused, naming the daemon's pid; publish goes through the daemon.
    cli = [sys.executable, "-m", "amygdala_daemon", "--config", str(daemon.config)]
    refused = subprocess.run([*cli, "rebuild"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert daemon.process is not None
    assert f"(pid {daemon.process.pid})" in refused.stderr
    forced = subprocess.run(
        [*cli, "publish", "--force"], capture_output=True, text=True, timeout=120
    )
    assert forced.returncode == 0 and "by the daemon" in forced.stdout, forced.stderr

    # SIGTERM: clients are told 1001, the process exits 0 after a checkpoint.
    watcher = daemon.client()
    assert daemon.stop() == 0
    with pytest.raises(ConnectionClosed) as going:
        while True:
            watcher.recv(timeout=10)
    assert going.value.rcvd is not None and going.value.rcvd.code == 1001
    assert (daemon.state / "accumulators.npz").is_file()


def test_applied_nodes_never_run_again_across_restarts(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()[:80]
    daemon = DaemonProcess(tmp_path, tiny_model_dir, nodes).start()
    daemons.append(daemon)
    client = daemon.client()
    wait_for(daemon.generation, what="the first generation")
    first = request(client, {"op": "status"})["status"]
    assert first["daemon"]["forward_sequences"] >= first["nodes"]["applied"]
    assert daemon.stop() == 0

    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(60)
        daemon.start(env={"NOTIFY_SOCKET": str(notify_path)})
        client = daemon.client()
        # Each finished poll reports its status: wait for several, so the check below
        # follows real passes over the source instead of a guess at how long they take.
        polls = 0
        while polls < 3:
            if listener.recv(4096).decode().startswith("STATUS=backlog 0"):
                polls += 1
    again = request(client, {"op": "status"})["status"]
    assert again["backlog"] == 0, "the source was read since the restart"
    assert again["daemon"]["forward_sequences"] == 0, "nothing already applied runs again"
    assert again["ledger_seq"] == first["ledger_seq"]
    with daemon.graph.open("a") as handle:
        handle.write(
            json.dumps(
                {"id": "fresh", "text": "A brand new entry about a quiet, easy morning.\ncalm:9"}
            )
            + "\n"
        )
    wait_for(
        lambda: request(client, {"op": "status"})["status"]["daemon"]["forward_sequences"] == 1,
        what="exactly one forward pass",
    )
    assert daemon.stop() == 0


def test_sd_notify_ready_status_watchdog_and_reload(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(60)
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:30])
    daemons.append(daemon)
    daemon.start(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    received: list[str] = []

    def receive_until(predicate: Callable[[str], bool]) -> str:
        while True:
            message = listener.recv(4096).decode()
            received.append(message)
            if predicate(message):
                return message

    ready = receive_until(lambda m: "READY=1" in m)
    assert "STATUS=backlog" in ready or any("STATUS=" in m for m in received)
    receive_until(lambda m: m == "WATCHDOG=1")
    receive_until(lambda m: m == "WATCHDOG=1")
    receive_until(lambda m: m.startswith("STATUS=backlog 0"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    reloading = receive_until(lambda m: "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reloading
    receive_until(lambda m: "READY=1" in m)
    assert daemon.stop() == 0
    receive_until(lambda m: "STOPPING=1" in m)
    listener.close()


def test_token_is_required_when_configured(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(
        tmp_path, tiny_model_dir, sample_nodes()[:20], server={"token": "s3cret"}
    )
    daemons.append(daemon)
    daemon.start()
    wait_for(daemon.generation, what="the first generation")
    with pytest.raises(InvalidStatus) as refused:
        connect(daemon.url(), open_timeout=5)
    assert refused.value.response.status_code == 401
    with connect(daemon.url() + "?token=s3cret", open_timeout=5) as client:
        assert request(client, {"op": "status"})["ok"]
    with connect(daemon.url(), additional_headers={"Authorization": "Bearer s3cret"}) as client:
        assert request(client, {"op": "status"})["ok"]
    assert daemon.stop() == 0
