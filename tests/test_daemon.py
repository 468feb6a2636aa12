"""`amygdala-daemon run` as a real subprocess: watching, events, restarts, systemd notify."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import config_toml, sample_nodes, write_jsonl


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class DaemonProcess:
    """A daemon subprocess with its config, graph and websocket address."""

    def __init__(
        self, tmp_path: Path, model_dir: Path, nodes: list[dict[str, Any]], **extra: Any
    ) -> None:
        self.tmp_path = tmp_path
        self.graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
        self.state = tmp_path / "state"
        self.port = free_port()
        table: dict[str, Any] = {
            "state_dir": str(self.state),
            "source": {"kind": "jsonl", "path": str(self.graph)},
            "model": {"name": str(model_dir), "layers": [1, 2], "threads": 1, "batch_size": 1},
            "daemon": {"poll_interval": 0.1, "checkpoint_interval": 1.0},
            "publish": {"interval": "1h", "publish_after_s": 0.2},
            "server": {"port": self.port},
        }
        for section, values in extra.items():
            if isinstance(values, dict):
                table.setdefault(section, {}).update(values)
            else:
                table[section] = values
        self.config = tmp_path / "config.toml"
        self.config.write_text(config_toml(table))
        self.process: subprocess.Popen[str] | None = None
        self.log = tmp_path / "daemon.log"
        self.clients = contextlib.ExitStack()

    def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "amygdala_daemon", "--config", str(self.config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            )
        return self

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def client(self, timeout: float = 60.0) -> ClientConnection:
        def attempt() -> ClientConnection | None:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            try:
                return self.clients.enter_context(connect(self.url(), open_timeout=2))
            except (OSError, InvalidStatus):
                return None

        return wait_for(attempt, timeout, "the websocket")

    def generation(self) -> int | None:
        try:
            return json.loads((self.state / "published/current/manifest.json").read_text())[
                "generation"
            ]
        except (OSError, ValueError):
            return None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        self.clients.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def request(
    client: ClientConnection, payload: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    """Send a request; skip events until its reply arrives."""
    client.send(json.dumps(payload))
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(client.recv(timeout=max(0.1, deadline - time.monotonic())))
        if "event" not in message:
            return message


def next_event(client: ClientConnection, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(client.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("event") == name:
            return message


def test_watch_apply_retract_and_events(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()
    daemon = DaemonProcess(tmp_path, tiny_model_dir, nodes[:150]).start()
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
    assert f"(pid {daemon.process.pid})" in refused.stderr  # type: ignore[union-attr]
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

    daemon.start()
    client = daemon.client()
    time.sleep(0.5)  # several polls
    again = request(client, {"op": "status"})["status"]
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
    daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
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


def test_slow_client_loses_its_backlog_not_the_daemon() -> None:
    from amygdala_daemon.serving.server import CLIENT_BACKLOG, EventHub

    hub = EventHub()
    fast: Any = object()
    slow: Any = object()
    queues = {"fast": hub.register(fast), "slow": hub.register(slow)}
    for i in range(CLIENT_BACKLOG + 10):
        hub.broadcast({"event": "node_applied", "id": str(i)})
        queues["fast"].get_nowait()  # the fast client keeps up
    slow_messages = [json.loads(queues["slow"].get_nowait()) for _ in range(queues["slow"].qsize())]
    assert slow_messages[0] == {
        "event": "backlog_dropped",
        "dropped": CLIENT_BACKLOG,
        "reason": "client too slow; events were discarded",
    }
    assert slow_messages[-1]["id"] == str(CLIENT_BACKLOG + 9)
    assert queues["fast"].empty()
