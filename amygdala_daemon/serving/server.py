"""Websocket status and events: JSON events out, `status` and `publish` requests in.

Loopback by default; any other bind needs a token. A handshake is refused when it comes from a
browser origin not allowed (403), without the current token (401), or past the connection cap
(503). Frames are size-bounded, a malformed request gets an error reply on a connection that
stays open, publish requests share one budget (forced ones a stricter one), and a slow client
loses its backlog (and is told so) rather than holding anything up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from amygdala_daemon.core.config import ServerConfig
from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.serving import logfilters
from amygdala_daemon.serving.limits import Clock, PublishGate, check_server_config
from amygdala_daemon.serving.requests import PublishRequest, parse_request

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


def same_secret(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode(), expected.encode())


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


def check_listening_address(running: ServerConfig, fresh: ServerConfig) -> None:
    """Refuse a reload that moves the websocket: clients and `publish` follow the file, so a
    daemon left on the old address while the file names a new one would be unreachable."""
    for key in ("host", "port"):
        before, after = getattr(running, key), getattr(fresh, key)
        if before != after:
            raise ConfigError(
                f"server.{key}",
                f"changed from {before!r} to {after!r}: that needs a restart "
                "(systemctl restart, or stop and start `run`)",
            )


class EventServer:
    """The websocket endpoint of the daemon, configured by `[server]`."""

    def __init__(self, config: ServerConfig, handle: Handler, clock: Clock = time.monotonic):
        check_server_config(config)
        self.config = config
        self.handle = handle
        self.hub = EventHub()
        self.server: Server | None = None
        self.gate = PublishGate(config, clock)
        # Every connection past the handshake, until its socket closes: the token it presented.
        self.admitted: dict[ServerConnection, str] = {}
        self.cap_refusals = logfilters.Summary(clock=clock)
        self.publish_refusals = logfilters.Summary(clock=clock)
        self.closing: set[asyncio.Task[None]] = set()
        self.redactor = logfilters.install()
        self.redactor.remember(config.token)

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self.server = await serve(
            self._connection,
            self.config.host,
            self.config.port,
            max_size=MAX_FRAME_BYTES,
            process_request=self._admit,
            logger=logfilters.WEBSOCKETS_LOG,
        )

    def configure(self, config: ServerConfig) -> None:
        """Adopt a reloaded `[server]`: token, origins and limits now; host and port at restart.

        A new token takes over at once: the old one gets 401, and clients that connected with
        it are closed (1008), so a leaked token stops working everywhere.
        """
        check_server_config(config)
        if (config.host, config.port) != (self.config.host, self.config.port):
            log.warning("server.host and server.port changes take effect at the next start")
        rotated = config.token != self.config.token
        self.config = replace(config, host=self.config.host, port=self.config.port)
        self.gate.configure(config)
        if rotated:
            self.redactor.remember(config.token)
            self._close_stale_clients()

    def set_token(self, token: str) -> None:
        self.configure(replace(self.config, token=token))

    def _close_stale_clients(self) -> None:
        stale = [c for c, sent in self.admitted.items() if not same_secret(sent, self.token)]
        for connection in stale:
            task = asyncio.ensure_future(connection.close(1008, "the server token changed"))
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)
        if stale:
            log.info("token changed: closed %d client(s) connected with the old one", len(stale))

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

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """The handshake: origin, token, then room; None lets the connection in."""
        allowed = {origin.lower() for origin in self.config.allowed_origins}
        origins = request.headers.get_all("Origin")
        if any(origin.lower() not in allowed for origin in origins):
            # A browser page: it could read status and force publishes on a token-less loopback.
            return connection.respond(
                HTTPStatus.FORBIDDEN, "this origin is not allowed (server.allowed_origins)\n"
            )
        sent = request_token(request.path, request.headers)
        if self.token and not same_secret(sent, self.token):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required\n")
        if len(self.admitted) >= self.config.max_connections:
            self._log_cap_refusal()
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "too many connections; try again later\n"
            )
        # Counted from here until the socket is gone, however the connection ends: the
        # handshake and the handler may both still fail.
        self.admitted[connection] = sent
        connection.connection_lost_waiter.add_done_callback(
            lambda _: self.admitted.pop(connection, None)
        )
        return None

    def _log_cap_refusal(self) -> None:
        covered = self.cap_refusals.due()
        if covered is not None:
            log.warning(
                "refusing websocket connections: %d open, the most server.max_connections "
                "allows; %d refused since the last such line",
                len(self.admitted),
                covered,
            )

    async def _pump(self, connection: ServerConnection, queue: asyncio.Queue[str]) -> None:
        while True:
            message = await queue.get()
            await connection.send(message)

    async def _connection(self, connection: ServerConnection) -> None:
        queue = self.hub.register(connection)
        pump = asyncio.create_task(self._pump(connection, queue))
        try:
            async for raw in connection:
                await connection.send(json.dumps(await self._answer(connection, raw)))
        except ConnectionClosed:
            # The client went away mid-request: nothing is left to answer.
            return
        finally:
            self.hub.unregister(connection)
            pump.cancel()

    async def _answer(self, connection: ServerConnection, raw: str | bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not valid JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'request must be an object with an "op" string'}
        refused = self._refuse_publish(connection, request)
        if refused is not None:
            return refused
        try:
            return await self.handle(request)
        except Exception as exc:  # a bad request must never take the server down
            log.exception("request %r failed", request.get("op"))
            return {"ok": False, "op": request["op"], "error": str(exc)}

    def _refuse_publish(
        self, connection: ServerConnection, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The error reply for a publish request over budget; None for anything else."""
        parsed = parse_request(request)
        if not isinstance(parsed, PublishRequest):
            return None
        sent = self.admitted.get(connection, "")
        refusal = self.gate.admit(parsed.force, not self.token or same_secret(sent, self.token))
        if refusal is None:
            return None
        covered = self.publish_refusals.due()
        if covered is not None:
            log.warning(
                "refused a publish request (%d since the last such line): %s",
                covered,
                refusal.error,
            )
        reply: dict[str, Any] = {"ok": False, "op": "publish", "error": refusal.error}
        if refusal.retry_after is not None:
            reply["retry_after"] = refusal.retry_after
        return reply
