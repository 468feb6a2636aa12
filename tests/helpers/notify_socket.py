"""A NOTIFY_SOCKET a test listens on: the daemon's sd_notify messages mark its polls and reloads."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path


class NotifyListener:
    """The datagram socket systemd would hold; each finished poll sends one `STATUS=` message."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(timeout)
        self.received: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def until(self, predicate: Callable[[str], bool]) -> str:
        """The next message that `predicate` accepts."""
        while True:
            message = self.socket.recv(4096).decode()
            self.received.append(message)
            if predicate(message):
                return message

    def polls(self, count: int, predicate: Callable[[str], bool]) -> None:
        """Wait for `count` finished polls whose status line `predicate` accepts."""
        for _ in range(count):
            self.until(lambda m: m.startswith("STATUS=") and predicate(m.removeprefix("STATUS=")))

    def reload_done(self) -> None:
        """Wait for a reload to begin and end (RELOADING=1, then READY=1)."""
        self.until(lambda m: "RELOADING=1" in m)
        self.until(lambda m: "READY=1" in m)

    def close(self) -> None:
        self.socket.close()
