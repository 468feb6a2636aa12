"""A daemon subprocess and the websocket calls tests make to it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.helpers.graphs import config_toml, write_jsonl

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], timeout: float = 60.0, what: str = "condition"
) -> T:
    """The first truthy value `condition` returns."""
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
        self.process: subprocess.Popen[bytes] | None = None
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
            manifest: dict[str, Any] = json.loads(
                (self.state / "published/current/manifest.json").read_text()
            )
            generation: int = manifest["generation"]
            return generation
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


def set_config_value(daemon: DaemonProcess, section: str, key: str, value: object) -> None:
    """Rewrite one key of the daemon's config file (for a reload or a restart to read)."""
    table = tomllib.loads(daemon.config.read_text())
    table.setdefault(section, {})[key] = value
    daemon.config.write_text(config_toml(table))


def request(
    client: ClientConnection, payload: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    """Send a request; skip events until its reply arrives."""
    client.send(json.dumps(payload))
    deadline = time.monotonic() + timeout
    while True:
        message: dict[str, Any] = json.loads(
            client.recv(timeout=max(0.1, deadline - time.monotonic()))
        )
        if "event" not in message:
            return message


def next_event(client: ClientConnection, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message: dict[str, Any] = json.loads(
            client.recv(timeout=max(0.1, deadline - time.monotonic()))
        )
        if message.get("event") == name:
            return message
