"""A held mass delete, confirmed over the websocket: `{"op": "confirm_delete", "key": ...}`.

The confirmation names the hold it answers (its `key`, as `status` shows it): a delete set
that changed since the user looked is held again, under a new key, rather than applied.
"""

from __future__ import annotations

from typing import Any, Protocol

from amygdala_daemon.core.delete_guard import DeleteHold
from amygdala_daemon.engine.writer import Engine


class HoldingDaemon(Protocol):
    """What a confirmation needs of the daemon."""

    held: DeleteHold | None
    engine: Engine | None

    async def poll(self) -> None: ...


async def confirm_delete(daemon: HoldingDaemon, key: str | None = None) -> dict[str, Any]:
    """Apply the delete held now, if `key` (when given) names it; the reply to send."""
    reply: dict[str, Any] = {"op": "confirm_delete"}
    held = daemon.held
    if held is None:
        return {**reply, "ok": False, "error": "no delete is held"}
    if key is not None and key != held.key:
        error = f"the held deletes are now {held.key!r}, not {key!r}: check and confirm again"
        return {**reply, "ok": False, "error": error}
    assert daemon.engine is not None
    daemon.engine.confirmed_hold = held.key
    # On the worker thread, after any sync in flight: that one may apply it first.
    await daemon.poll()
    now = daemon.held.to_json() if daemon.held is not None else None
    return {**reply, "ok": True, "confirmed": held.to_json(), "held": now}
