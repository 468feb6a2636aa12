"""The websocket requests the daemon answers: parsed and checked here, answered by the daemon.

{"op": "status"}                    -> {"ok": true, "op": "status", "status": {...}}
{"op": "publish", "force": false}   -> {"ok": true, "op": "publish", "published": ...}
{"op": "confirm_delete", "key": "."} -> {"ok": true, "op": "confirm_delete", "confirmed": {...}}
    (applies the held mass delete; `key`, optional, must name the hold in `status`)

A publish over its budget never reaches the daemon: the server answers it (see `limits`) with
{"ok": false, "op": "publish", "error": "...", "retry_after": seconds}.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

OPS = ("status", "publish", "confirm_delete")


@dataclass(frozen=True)
class StatusRequest:
    """Counts per concept, backlog, last generation: what `status --json` prints."""


@dataclass(frozen=True)
class PublishRequest:
    force: bool = False


@dataclass(frozen=True)
class ConfirmDeleteRequest:
    key: str | None = None


Request = StatusRequest | PublishRequest | ConfirmDeleteRequest


class Responder(Protocol):
    """What answers the requests: the daemon."""

    def status_reply(self) -> Awaitable[dict[str, Any]]: ...

    def publish(self, force: bool = False) -> Awaitable[dict[str, Any]]: ...

    def confirm_delete(self, key: str | None = None) -> Awaitable[dict[str, Any]]: ...


def parse_request(request: dict[str, Any]) -> Request | str:
    """The request, or the one-line reason it is refused.

    >>> parse_request({"op": "publish", "force": True})
    PublishRequest(force=True)
    >>> parse_request({"op": "publish", "force": "yes"})
    '"force" must be true or false'
    >>> parse_request({"op": "nap"})
    "unknown op 'nap' (accepted: status, publish, confirm_delete)"
    """
    op = request.get("op")
    if op == "status":
        return StatusRequest()
    if op == "publish":
        force = request.get("force", False)
        if not isinstance(force, bool):
            return '"force" must be true or false'
        return PublishRequest(force)
    if op == "confirm_delete":
        key = request.get("key")
        if key is not None and not isinstance(key, str):
            return '"key" must be a string'
        return ConfirmDeleteRequest(key)
    return f"unknown op {op!r} (accepted: {', '.join(OPS)})"


async def dispatch(request: dict[str, Any], responder: Responder) -> dict[str, Any]:
    """Answer one websocket request."""
    parsed = parse_request(request)
    if isinstance(parsed, str):
        return {"ok": False, "op": request.get("op"), "error": parsed}
    if isinstance(parsed, StatusRequest):
        return {"ok": True, "op": "status", "status": await responder.status_reply()}
    if isinstance(parsed, ConfirmDeleteRequest):
        return await responder.confirm_delete(parsed.key)
    return await responder.publish(parsed.force)
