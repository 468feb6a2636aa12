"""server.py: the event hub and the websocket server, with a real client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect
from websockets.typing import Origin

from amygdala_daemon.core.config import ServerConfig
from amygdala_daemon.serving.server import CLIENT_BACKLOG, MAX_FRAME_BYTES, EventHub, EventServer
from tests.helpers.daemon import DaemonProcess, request
from tests.helpers.graphs import config_toml, sample_nodes
from tests.helpers.notify_socket import NotifyListener


def test_slow_client_loses_its_backlog_not_the_daemon() -> None:
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


class Answers:
    """The handler the server is given: it records each request and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if request["op"] == "status":
            return {"ok": True, "op": "status", "status": {"generation": 7, "backlog": 0}}
        if request["op"] == "publish":
            return {"ok": True, "op": "publish", "published": bool(request.get("force"))}
        raise RuntimeError(f"cannot {request['op']} today")


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
async def server(answers: Answers) -> AsyncIterator[EventServer]:
    started = EventServer(ServerConfig(port=0), answers)
    await started.start()
    yield started
    await started.close()


def url(server: EventServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.bound_port}/{query}"


async def ask(client: ClientConnection, payload: str | dict[str, Any]) -> dict[str, Any]:
    await client.send(payload if isinstance(payload, str) else json.dumps(payload))
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(client.recv(), 10))
    return reply


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_requests_go_to_the_handler_and_its_answer_comes_back(
    server: EventServer, answers: Answers
) -> None:
    assert server.bound_port > 0
    async with connect(url(server)) as client:
        status = await ask(client, {"op": "status"})
        assert status == {"ok": True, "op": "status", "status": {"generation": 7, "backlog": 0}}
        assert await ask(client, {"op": "publish", "force": True}) == {
            "ok": True,
            "op": "publish",
            "published": True,
        }
    assert answers.requests == [{"op": "status"}, {"op": "publish", "force": True}]


async def test_bad_requests_get_an_error_and_the_connection_stays_open(
    server: EventServer, answers: Answers, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(url(server)) as client:
        assert await ask(client, "{not json") == {"ok": False, "error": "request is not valid JSON"}
        for shape in ("[1, 2]", '{"op": 5}', '{"force": true}', '"status"'):
            assert await ask(client, shape) == {
                "ok": False,
                "error": 'request must be an object with an "op" string',
            }, shape
        assert answers.requests == [], "the handler only sees well-formed requests"
        failed = await ask(client, {"op": "explode"})
        assert failed == {"ok": False, "op": "explode", "error": "cannot explode today"}
        assert "request 'explode' failed" in caplog.text
        assert (await ask(client, {"op": "status"}))["ok"] is True


async def test_events_reach_every_client_until_it_leaves(server: EventServer) -> None:
    async with connect(url(server)) as first, connect(url(server)) as second:
        await until(lambda: len(server.hub.queues) == 2)
        server.hub.broadcast({"event": "published", "generation": 3})
        for client in (first, second):
            event = json.loads(await asyncio.wait_for(client.recv(), 10))
            assert event == {"event": "published", "generation": 3}
        await second.close()
        await until(lambda: len(server.hub.queues) == 1)
        server.hub.broadcast({"event": "node_applied", "id": "n1"})
        assert json.loads(await asyncio.wait_for(first.recv(), 10))["id"] == "n1"


async def test_a_configured_token_is_required(answers: Answers) -> None:
    token = "s3cret"
    server = EventServer(ServerConfig(port=0, token=token), answers)
    await server.start()
    try:
        for query, headers in (("", {}), ("?token=wrong", {}), ("", {"Authorization": "Bearer x"})):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url(server, query), additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
        assert answers.requests == []
        async with connect(url(server, f"?token={token}")) as client:
            assert (await ask(client, {"op": "status"}))["ok"] is True
        bearer = {"Authorization": f"Bearer {token}"}
        async with connect(url(server), additional_headers=bearer) as client:
            assert (await ask(client, {"op": "status"}))["ok"] is True
    finally:
        await server.close()


async def test_an_oversized_frame_closes_that_client_only(server: EventServer) -> None:
    async with connect(url(server)) as big, connect(url(server)) as small:
        await big.send("x" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(big.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await ask(small, {"op": "status"}))["ok"] is True


async def test_shutdown_stops_accepting_then_closes_clients_with_1001(answers: Answers) -> None:
    server = EventServer(ServerConfig(port=0), answers)
    await server.start()
    address = url(server)
    async with connect(address) as client:
        await until(lambda: len(server.hub.queues) == 1)
        server.stop_accepting()
        with pytest.raises(OSError):
            async with connect(address, open_timeout=5):
                pass
        assert (await ask(client, {"op": "status"}))["ok"] is True, "connected clients stay"
        await server.close()
        with pytest.raises(ConnectionClosed) as going:
            await asyncio.wait_for(client.recv(), 10)
        assert going.value.rcvd is not None and going.value.rcvd.code == 1001


class Clock:
    """A clock the test moves by hand, for the server's budgets (the sockets stay real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(
    answers: Answers, clock: Clock | None = None, **config: Any
) -> AsyncIterator[EventServer]:
    started = EventServer(ServerConfig(port=0, **config), answers, clock or Clock())
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def refused_status(address: str, **options: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(address, open_timeout=10, **options):
            pass
    return refused.value.response.status_code


async def test_a_browser_origin_is_refused_unless_allowed(answers: Answers) -> None:
    async with serving(answers) as server:
        # A page on any site may open a websocket to loopback; only its Origin header tells.
        assert await refused_status(url(server), origin=Origin("https://evil.example")) == 403
        async with connect(url(server)) as client:  # no Origin: not a browser
            assert (await ask(client, {"op": "status"}))["ok"] is True
    async with serving(answers, allowed_origins=["http://localhost:3000"]) as server:
        async with connect(url(server), origin=Origin("http://localhost:3000")) as client:
            assert (await ask(client, {"op": "status"}))["ok"] is True
        for other in ("http://localhost:3001", "null", "https://localhost:3000"):
            assert await refused_status(url(server), origin=Origin(other)) == 403, other
    assert [request["op"] for request in answers.requests] == ["status", "status"]


async def test_forced_publishes_are_spaced_out(answers: Answers) -> None:
    clock = Clock()
    async with (
        serving(answers, clock, force_publish_interval=60.0) as server,
        connect(url(server)) as first,
        connect(url(server)) as second,
    ):
        assert (await ask(first, {"op": "publish", "force": True}))["published"] is True
        clock.now += 10
        refused = await ask(second, {"op": "publish", "force": True})
        assert refused["ok"] is False and refused["op"] == "publish"
        assert "next is allowed in 50s (server.force_publish_interval = 60)" in refused["error"]
        assert refused["retry_after"] == 50.0
        # An ordinary publish (skipped when nothing changed) is still let through.
        assert (await ask(second, {"op": "publish"}))["ok"] is True
        assert (await ask(second, {"op": "status"}))["ok"] is True, "the connection stays"
        clock.now += 50
        assert (await ask(second, {"op": "publish", "force": True}))["published"] is True
    forced = [request for request in answers.requests if request.get("force")]
    assert len(forced) == 2, "the refused one never reached the daemon"


async def test_publish_requests_from_all_clients_share_one_budget(answers: Answers) -> None:
    clock = Clock()
    async with (
        serving(answers, clock, publish_requests_per_minute=3.0) as server,
        connect(url(server)) as first,
        connect(url(server)) as second,
    ):
        for client in (first, second, first):
            assert (await ask(client, {"op": "publish"}))["ok"] is True
        refused = await ask(second, {"op": "publish"})
        assert refused["ok"] is False
        assert "at most 3 a minute" in refused["error"] and refused["retry_after"] == 20.0
        assert (await ask(second, {"op": "status"}))["ok"] is True, "status is not limited"
        clock.now += 20
        assert (await ask(second, {"op": "publish"}))["ok"] is True
        assert (await ask(first, {"op": "publish"}))["ok"] is False
    assert [request["op"] for request in answers.requests].count("publish") == 4


async def test_connections_past_the_cap_are_refused_and_logged_sparingly(
    answers: Answers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    async with serving(answers, clock, max_connections=4) as server, AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url(server))) for _ in range(4)]
        for _ in range(30):
            assert await refused_status(url(server)) == 503
        for client in clients:
            assert (await ask(client, {"op": "status"}))["ok"] is True, "the others still answer"
        clock.now += 61  # a summary line is due again
        assert await refused_status(url(server)) == 503
        await clients.pop().close()
        await until(lambda: len(server.admitted) == 3)
        async with connect(url(server)) as late:  # its place is free again
            assert (await ask(late, {"op": "status"}))["ok"] is True
    ours = [r.getMessage() for r in caplog.records if "refusing websocket" in r.getMessage()]
    assert len(ours) == 2, ours
    assert "4 open" in ours[0] and "1 refused since the last such line" in ours[0]
    assert "30 refused since the last such line" in ours[1]
    theirs = [r for r in caplog.records if r.getMessage().startswith("connection rejected (503")]
    assert len(theirs) <= 1, "websockets' own line per refusal is throttled too"


async def test_a_new_token_replaces_the_old_one_at_once(answers: Answers) -> None:
    async with serving(answers, token="old-token-1") as server:
        async with connect(url(server, "?token=old-token-1")) as before:
            assert (await ask(before, {"op": "status"}))["ok"] is True
            server.set_token("new-token-2")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(before.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert await refused_status(url(server, "?token=old-token-1")) == 401
        async with connect(url(server, "?token=new-token-2")) as after:
            assert (await ask(after, {"op": "publish", "force": True}))["published"] is True


@pytest.mark.slow
def test_sighup_with_a_new_token_retires_the_old_one(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    old, new = "old-secret-3b7e", "new-secret-91fd"
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20], server={"token": old})
    daemons.append(daemon)
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon.start(env=listener.env)
        listener.until(lambda message: "READY=1" in message)
        with sync_connect(f"{daemon.url()}?token={old}", open_timeout=10) as watcher:
            assert request(watcher, {"op": "status"})["ok"]
            table = tomllib.loads(daemon.config.read_text())
            table["server"]["token"] = new
            daemon.config.write_text(config_toml(table))
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGHUP)
            listener.reload_done()
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # events may come first
                    watcher.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        for stale in (f"?token={old}", ""):
            with pytest.raises(InvalidStatus) as refused:
                sync_connect(daemon.url() + stale, open_timeout=10)
            assert refused.value.response.status_code == 401
        with sync_connect(f"{daemon.url()}?token={new}", open_timeout=10) as client:
            assert request(client, {"op": "status"})["ok"]
        bearer = {"Authorization": f"Bearer {new}"}
        with sync_connect(daemon.url(), additional_headers=bearer, open_timeout=10) as client:
            assert request(client, {"op": "status"})["ok"]
        assert daemon.stop() == 0
    finally:
        listener.close()
