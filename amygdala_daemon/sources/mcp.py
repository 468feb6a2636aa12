"""MCP memory source: the graph as a memory MCP server serves it, over Streamable HTTP or stdio.

The engine calls `snapshot()` on its worker thread and wants nodes or a `SourceError`; the
official SDK is async. So the source keeps one connection in a thread of its own, with its own
event loop (`_Link`), and hands it requests one at a time. The link reconnects by itself with
exponential backoff and jitter. While it is down, `snapshot()` fails at once with the last
error rather than waiting on a dead server, and the daemon reports `source_error` then
`source_recovered`. Change notices from the server (a `subscriptions/listen` stream on a
2026-era server, `resources/subscribe` on an older one), a lost connection and a reconnect all
call the hint callback, which wakes the daemon's poll loop: it reads again at once.

Which tools to call is `core/tool_mapping`; how their answers become nodes is `mcp_mapping`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shlex
import threading
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import SubscriptionLost
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from amygdala_daemon import __version__
from amygdala_daemon.core.config import SourceConfig
from amygdala_daemon.core.tool_mapping import MappingError, effective, tool_mapping
from amygdala_daemon.sources.base import Snapshot
from amygdala_daemon.sources.errors import SourceError
from amygdala_daemon.sources.mcp_mapping import Reader, backoff_delay, default_uniform, payload

log = logging.getLogger(__name__)
T = TypeVar("T")
Operation = Callable[[Client, int], Awaitable[T]]

FIRST_RETRY_S = 0.5
# Subscribing to every resource of a server with thousands would be a flood of its own.
MAX_WATCHED_RESOURCES = 50
# These MCP errors mean the connection, not the answer, is broken: reconnect.
TRANSPORT_ERRORS = (types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT)


class _Reconnect(Exception):
    """The connection is not worth keeping (its message says why): drop it and reconnect."""


class McpSource:
    """A memory graph behind an MCP server, read through the tool mapping in the config."""

    def __init__(self, config: SourceConfig) -> None:
        chosen = effective(config)
        try:
            mapping = tool_mapping(chosen)
        except MappingError as exc:
            raise SourceError(f"config: {exc}") from None
        target: str | StdioServerParameters
        if chosen.url:
            target = endpoint(chosen.url)
            self.name = f"mcp {target}"
        elif chosen.command:
            argv = [*chosen.command, *chosen.args]
            target = StdioServerParameters(command=argv[0], args=argv[1:])
            self.name = f"mcp stdio {shlex.join(argv)}"
        else:
            raise SourceError("config: source.url: the mcp source needs source.url or .command")
        self._link = _Link(self.name, target, chosen.timeout_s, chosen.backoff_max_s)
        self._reader = Reader(mapping)
        self._timeout_s = chosen.timeout_s
        # Closes the connection (and a stdio server process) when the source is dropped, or at
        # exit, for callers that never call close().
        self._finalizer = weakref.finalize(self, self._link.close)

    def describe(self) -> str:
        return self.name

    def snapshot(self) -> Snapshot:
        reader, timeout_s = self._reader, self._timeout_s
        return self._link.run(
            lambda client, connection: reader.read(_SdkCalls(client, timeout_s), connection)
        )

    def start_hints(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from another thread) whenever the graph may have changed."""
        self._link.on_hint = callback
        self._link.start()

    def close(self) -> None:
        self._finalizer()


class _Link:
    """One connection to the server, kept up in a background thread and event loop."""

    def __init__(
        self,
        name: str,
        target: str | StdioServerParameters,
        timeout_s: float,
        backoff_max_s: float,
        uniform: Callable[[float, float], float] = default_uniform,
    ) -> None:
        self.name = name
        self.target = target
        self.timeout_s = timeout_s
        self.backoff_max_s = backoff_max_s
        self.uniform = uniform
        self.on_hint: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # The rest is only touched on the link's own loop.
        self._state = "connecting"
        self._error = ""
        self._connections = 0
        self._settled: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._requests: asyncio.Queue[tuple[Operation[Any], asyncio.Future[Any]]] | None = None
        self._current: asyncio.Future[Any] | None = None

    # -- the caller's side (any thread) ---------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._closed:
                raise SourceError(f"{self.name}: the source is closed")
            if self._thread is not None:
                return
            ready = threading.Event()
            self._thread = threading.Thread(
                target=lambda: asyncio.run(self._main(ready)), name="amygdala-mcp", daemon=True
            )
            self._thread.start()
        ready.wait()

    def run(self, operation: Operation[T]) -> T:
        """Run `operation` on the live connection; `SourceError` when there is none."""
        self.start()
        assert self._loop is not None
        try:
            future = asyncio.run_coroutine_threadsafe(self._submit(operation), self._loop)
        except RuntimeError:  # the loop has ended: closed meanwhile
            raise SourceError(f"{self.name}: the source is closed") from None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise SourceError(f"{self.name}: the source is closed") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop has already ended
            return
        if threading.current_thread() is not thread:
            # A stdio server gets a few seconds to exit after its stdin closes.
            thread.join(timeout=self.timeout_s + 10)

    def _hint(self) -> None:
        callback = self.on_hint
        if callback is not None:
            try:
                callback()
            except Exception:  # the daemon's loop may be gone at shutdown; never kill the link
                log.debug("hint callback failed", exc_info=True)

    # -- the link's own loop --------------------------------------------------------------

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._settled, self._stop = asyncio.Event(), asyncio.Event()
        self._requests = asyncio.Queue()
        ready.set()
        supervisor = asyncio.create_task(self._supervise())
        await self._stop.wait()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        self._fail_pending("the source is closed")

    def _set_state(self, state: str, error: str = "") -> None:
        assert self._settled is not None
        self._state, self._error = state, error
        if state == "connecting":
            self._settled.clear()
        else:
            self._settled.set()

    async def _submit(self, operation: Operation[T]) -> T:
        assert self._settled is not None and self._requests is not None
        if self._state == "connecting":
            try:
                await asyncio.wait_for(self._settled.wait(), self.timeout_s)
            except TimeoutError:
                raise SourceError(
                    f"{self.name}: no connection within {self.timeout_s:g}s"
                ) from None
        if self._state != "connected":
            raise SourceError(f"{self.name}: {self._error}")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._requests.put((operation, future))
        return await future

    async def _supervise(self) -> None:
        failures = 0
        while True:
            self._set_state("connecting")
            try:
                async with Client(
                    self.target,
                    cache=None,  # every poll must reach the server
                    read_timeout_seconds=self.timeout_s,
                    message_handler=self._on_message,
                    client_info=types.Implementation(name="amygdala-daemon", version=__version__),
                ) as client:
                    failures = 0
                    self._connections += 1
                    self._set_state("connected")
                    log.info("connected to %s (protocol %s)", self.name, client.protocol_version)
                    if self._connections > 1:
                        self._hint()  # anything written while we were away is there to read
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._watch, client)
                        await self._serve(client)
                error = "the connection ended"
            except Exception as exc:
                error = failure_line(exc)
            was_connected = self._state == "connected"
            self._set_state("down", f"connection failed: {error}" if not was_connected else error)
            self._fail_pending(self._error)
            if was_connected:
                log.warning("lost %s: %s", self.name, error)
                self._hint()  # let the daemon look now and report the outage
            else:
                failures += 1
            await asyncio.sleep(
                backoff_delay(failures, FIRST_RETRY_S, self.backoff_max_s, self.uniform)
            )

    async def _serve(self, client: Client) -> None:
        assert self._requests is not None
        while True:
            operation, future = await self._requests.get()
            if future.done():
                continue
            self._current = future
            try:
                value = await operation(client, self._connections)
            except MappingError as exc:
                future.set_exception(SourceError(f"{self.name}: {exc}"))
            except (MCPError, TimeoutError) as exc:
                # The SDK's own read timeout and ours say the same thing.
                code = exc.code if isinstance(exc, MCPError) else types.REQUEST_TIMEOUT
                timed_out = code == types.REQUEST_TIMEOUT
                error = f"no answer within {self.timeout_s:g}s" if timed_out else failure_line(exc)
                future.set_exception(SourceError(f"{self.name}: {error}"))
                if code in TRANSPORT_ERRORS:
                    # A wedged or closed connection is not worth keeping.
                    raise _Reconnect(error) from None
            except Exception as exc:
                future.set_exception(SourceError(f"{self.name}: {failure_line(exc)}"))
                raise
            else:
                future.set_result(value)
            self._current = None

    def _fail_pending(self, error: str) -> None:
        waiting = [self._current] if self._current is not None else []
        while self._requests is not None and not self._requests.empty():
            waiting.append(self._requests.get_nowait()[1])
        self._current = None
        for future in waiting:
            if not future.done():
                future.set_exception(SourceError(f"{self.name}: {error}"))

    async def _watch(self, client: Client) -> None:
        """Ask for change notices, where the server offers them; each one is a hint."""
        try:
            resources = client.server_capabilities.resources
            uris: list[str] = []
            if resources is not None:
                with anyio.fail_after(self.timeout_s):
                    listing = await client.list_resources()
                uris = [str(r.uri) for r in listing.resources[:MAX_WATCHED_RESOURCES]]
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                async with client.listen(
                    resources_list_changed=True, resource_subscriptions=uris
                ) as subscription:
                    async for _event in subscription:
                        self._hint()
                # Without the stream, changes would go unnoticed until the next poll.
                raise _Reconnect("the server ended its change stream")
            elif resources is not None and resources.subscribe:
                for uri in uris:
                    request = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
                    with anyio.fail_after(self.timeout_s):
                        await client.session.send_request(request, types.EmptyResult)
                # Older servers deliver the notices to _on_message.
        except (MCPError, TimeoutError) as exc:
            # No change notices from this server: polling alone still sees everything.
            log.info("%s offers no change notices (%s); polling only", self.name, exc)

    async def _on_message(self, message: IncomingMessage) -> None:
        # Older servers' notices arrive only here; a listen stream's arrive here too, and
        # a second hint for one change only sets the daemon's wake event twice.
        notices = (types.ResourceUpdatedNotification, types.ResourceListChangedNotification)
        if isinstance(message, notices):
            self._hint()


class _SdkCalls:
    """The reader's tool calls, through the SDK client, each with its own timeout."""

    def __init__(self, client: Client, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self.client.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code in TRANSPORT_ERRORS:
                raise
            raise MappingError(f"tool {tool!r}: the server answered an error: {exc}") from None
        except (RuntimeError, ValidationError) as exc:
            # The SDK checks results against the tool's declared output schema.
            raise MappingError(f"tool {tool!r}: {failure_line(exc)}") from None
        texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
        return payload(tool, result.structured_content, texts, result.is_error)

    async def tool_names(self) -> set[str]:
        names: set[str] = set()
        cursor: str | None = None
        for _page in range(100):  # a paginator that never ends must not hang a poll
            with anyio.fail_after(self.timeout_s):
                page = await self.client.list_tools(cursor=cursor)
            names.update(tool.name for tool in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return names


def endpoint(url: str) -> str:
    """The URL to connect to: one without a path gets the conventional `/mcp`.

    The original pipeline's `--memory-mcp-url http://localhost:7777` named the server, not its
    Streamable HTTP endpoint, which both official SDKs serve at `/mcp` by default.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path="/mcp"))
    return url


def failure_line(exc: BaseException) -> str:
    """One line for an exception, task groups unwrapped to the error that matters."""
    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        else:
            leaves.append(current)
    # A lost change stream only says the connection broke; the transport error says why.
    chosen = next((e for e in leaves if not isinstance(e, SubscriptionLost)), leaves[0])
    if isinstance(chosen, SubscriptionLost):
        return "the server closed the connection"
    if isinstance(chosen, _Reconnect):
        return str(chosen)
    text = " ".join(str(chosen).split())
    line = f"{type(chosen).__name__}: {text}" if text else type(chosen).__name__
    return line[:300]
