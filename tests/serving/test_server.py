"""server.py: the event hub and the websocket server, with a real client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from amygdala_daemon.serving.server import CLIENT_BACKLOG, MAX_FRAME_BYTES, EventHub, EventServer


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
    started = EventServer("127.0.0.1", 0, "", answers)
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
    server = EventServer("127.0.0.1", 0, token, answers)
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
    server = EventServer("127.0.0.1", 0, "", answers)
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
