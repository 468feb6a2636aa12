"""A small memory MCP server for the tests, built on the SDK's `MCPServer`.

    python -m tests.helpers.memory_mcp_server --store nodes.json --port 7777     # Streamable HTTP
    python -m tests.helpers.memory_mcp_server --store nodes.json --stdio         # stdio

Nodes live in a JSON file (`{"seq": N, "nodes": {id: record}}`), read on every call and
replaced by rename on every write, so a restart keeps them and a test may write records into
it directly (also malformed ones) while the server is down. A deleted node stays as a
tombstone so `changes_since` can report it. Every write notifies `subscriptions/listen`
subscribers: the `memory://nodes` resource was updated and the resource list changed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

RESOURCE_URI = "memory://nodes"


class Store:
    """The JSON file of nodes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"seq": 0, "nodes": {}}
        return data

    def save(self, data: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        data = self.load()
        data["seq"] += 1
        stamped = {**record, "seq": data["seq"], "updated_at": f"{time.time():.6f}"}
        data["nodes"][record["id"]] = stamped
        self.save(data)
        return stamped


def live(data: dict[str, Any]) -> list[Any]:
    return [r for r in data["nodes"].values() if not (isinstance(r, dict) and r.get("deleted"))]


def result(payload: Any, structured: bool = True) -> CallToolResult:
    """JSON in a text block always; structured content too unless told otherwise."""
    text = TextContent(type="text", text=json.dumps(payload))
    return CallToolResult(content=[text], structured_content=payload if structured else None)


def build(store: Store) -> MCPServer:
    server = MCPServer("amygdala-test-memory")

    async def changed(ctx: Context) -> None:
        await ctx.notify_resource_updated(RESOURCE_URI)
        await ctx.notify_resources_changed()

    @server.tool()
    async def upsert_node(
        id: str, text: str, ctx: Context, kind: str | None = None
    ) -> CallToolResult:
        """Create or replace a node."""
        record = {"id": id, "text": text, **({"kind": kind} if kind is not None else {})}
        stamped = store.write(record)
        await changed(ctx)
        return result({"node": stamped})

    @server.tool()
    async def delete_node(id: str, ctx: Context) -> CallToolResult:
        """Delete a node (a tombstone stays for changes_since)."""
        stamped = store.write({"id": id, "deleted": True})
        await changed(ctx)
        return result({"deleted": stamped["id"]})

    @server.tool()
    async def list_nodes() -> CallToolResult:
        """Every live node, and the cursor to ask for changes after them.

        A `"delay"` in the store (seconds) makes it slow, as a struggling server is.
        """
        data = store.load()
        await anyio.sleep(data.get("delay", 0))
        return result({"nodes": live(data), "cursor": data["seq"]})

    @server.tool()
    def list_nodes_text() -> CallToolResult:
        """The same listing as JSON text only, no structured content."""
        data = store.load()
        return result({"nodes": live(data), "cursor": data["seq"]}, structured=False)

    @server.tool()
    def list_ids() -> CallToolResult:
        """Only ids and timestamps: the client fetches each node with get_node."""
        nodes = [
            {"id": r["id"], "updated_at": r.get("updated_at")}
            for r in live(store.load())
            if isinstance(r, dict)
        ]
        return result({"nodes": nodes})

    @server.tool()
    def get_node(id: str) -> CallToolResult:
        """One node by id."""
        record = store.load()["nodes"].get(id)
        if record is None or record.get("deleted"):
            return CallToolResult(
                content=[TextContent(type="text", text="no such node")], is_error=True
            )
        return result({"nodes": [record]})

    @server.tool()
    def changes_since(cursor: int) -> CallToolResult:
        """Nodes written after `cursor` (tombstones included), and the new cursor."""
        data = store.load()
        changes = [r for r in data["nodes"].values() if r.get("seq", 0) > cursor]
        return result({"nodes": changes, "cursor": data["seq"]})

    @server.tool()
    def broken_listing() -> CallToolResult:
        """A listing of the wrong shape: `nodes` is not a list."""
        return result({"nodes": 42})

    @server.tool()
    def not_json() -> CallToolResult:
        """Prose, neither structured content nor JSON."""
        return CallToolResult(content=[TextContent(type="text", text="all is well")])

    @server.resource(RESOURCE_URI, mime_type="application/json")
    def nodes_resource() -> str:
        """The live nodes as JSON; subscribe to it for change notices."""
        return json.dumps(live(store.load()))

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--stdio", action="store_true")
    args = parser.parse_args()
    server = build(Store(args.store))
    if args.stdio:
        server.run("stdio")
        return
    import uvicorn

    # Open listen streams never end by themselves; without a bound on the graceful
    # shutdown, SIGTERM would wait for the clients to hang up.
    config = uvicorn.Config(
        server.streamable_http_app(host=args.host),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
