"""tests/helpers/memory_mcp_server.py run as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from tests.helpers import ROOT
from tests.helpers.daemon import free_port, wait_for


class MemoryServer:
    """memory_mcp_server.py as a subprocess on 127.0.0.1, and its JSON store."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "nodes.json"
        self.log = tmp_path / "mcp-server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MemoryServer:
        argv = ["--store", str(self.store), "--port", str(self.port)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.memory_mcp_server", *argv],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

        def accepting() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(accepting, what="the MCP server")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(self, tool: str, **arguments: Any) -> Any:
        async def go() -> Any:
            async with Client(self.url, cache=None, read_timeout_seconds=30) as client:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                return result.structured_content

        return anyio.run(go)

    def write(self, *records: Any, seq: int | None = None) -> None:
        """Put records straight into the store, as if written while the server was down.

        Each record gets the next sequence number, or `seq` when given.
        """
        data: dict[str, Any] = (
            json.loads(self.store.read_text()) if self.store.exists() else {"seq": 0, "nodes": {}}
        )
        for number, record in enumerate(records):
            data["seq"] += 1
            if not isinstance(record, dict):
                data["nodes"][f"#{number}"] = record
                continue
            stamped = {**record, "seq": data["seq"] if seq is None else seq}
            data["nodes"][record.get("id", f"#{number}")] = stamped
        self.store.write_text(json.dumps(data))
