"""Websocket status and events: JSON events out, `status` and `publish` requests in.

Loopback by default; any other bind needs a token. Frames are size-bounded, a malformed request
gets an error reply on a connection that stays open, and a slow client loses its backlog (and
is told so) rather than holding anything up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
CLIENT_BACKLOG = 256

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def request_token(path: str, headers: Headers) -> str:
    """The token a client sent, as `?token=` or `Authorization: Bearer`."""
    query = parse_qs(urlsplit(path).query)
    if query.get("token"):
        return query["token"][0]
    authorization = headers.get("Authorization", "")
    return authorization.removeprefix("Bearer ").strip()


class EventHub:
    """Fan-out of events to every connected client, each through its own bounded queue."""

    def __init__(self) -> None:
        self.queues: dict[ServerConnection, asyncio.Queue[str]] = {}

    def register(self, connection: ServerConnection) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_BACKLOG)
        self.queues[connection] = queue
        return queue

    def unregister(self, connection: ServerConnection) -> None:
        self.queues.pop(connection, None)

    def broadcast(self, event: dict[str, Any]) -> None:
        message = json.dumps(event)
        for queue in self.queues.values():
            if queue.full():
                dropped = queue.qsize()
                while not queue.empty():
                    queue.get_nowait()
                notice = {
                    "event": "backlog_dropped",
                    "dropped": dropped,
                    "reason": "client too slow; events were discarded",
                }
                queue.put_nowait(json.dumps(notice))
            queue.put_nowait(message)


class EventServer:
    """The websocket endpoint of the daemon."""

    def __init__(self, host: str, port: int, token: str, handle: Handler) -> None:
        self.host, self.port, self.token = host, port, token
        self.handle = handle
        self.hub = EventHub()
        self.server: Server | None = None

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self.server = await serve(
            self._connection,
            self.host,
            self.port,
            max_size=MAX_FRAME_BYTES,
            process_request=self._check_token,
        )

    def stop_accepting(self) -> None:
        """Close the listening socket; connected clients stay until `close`."""
        if self.server is not None:
            self.server.close(close_connections=False)

    async def close(self) -> None:
        """Close every client with 1001 (going away), then the server."""
        if self.server is None:
            return
        # After stop_accepting() the server is already closing, and a second close() does
        # not reach the connections: close them here.
        await asyncio.gather(
            *(connection.close(1001, "daemon stopping") for connection in list(self.hub.queues)),
            return_exceptions=True,
        )
        self.server.close(close_connections=True)
        await self.server.wait_closed()

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.token:
            return None
        sent = request_token(request.path, request.headers)
        if hmac.compare_digest(sent.encode(), self.token.encode()):
            return None
        return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required\n")

    async def _pump(self, connection: ServerConnection, queue: asyncio.Queue[str]) -> None:
        while True:
            message = await queue.get()
            await connection.send(message)

    async def _connection(self, connection: ServerConnection) -> None:
        queue = self.hub.register(connection)
        pump = asyncio.create_task(self._pump(connection, queue))
        try:
            async for raw in connection:
                await connection.send(json.dumps(await self._answer(raw)))
        except ConnectionClosed:
            # The client went away mid-request: nothing is left to answer.
            return
        finally:
            self.hub.unregister(connection)
            pump.cancel()

    async def _answer(self, raw: str | bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'request must be an object with an "op" string'}
        try:
            return await self.handle(request)
        except Exception as exc:  # a bad request must never take the server down
            log.exception("request %r failed", request.get("op"))
            return {"ok": False, "op": request["op"], "error": str(exc)}
