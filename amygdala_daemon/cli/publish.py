"""`publish`: by this process, after any other CLI writer; by the daemon when one runs.

Only a lock holder that recorded itself as the daemon is asked over the websocket. Another
CLI writer (a second `publish`, a `rebuild`) is waited for; a daemon that holds the lock but
does not answer yet is still starting, and is given time to.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from amygdala_daemon.cli.common import config_from_args
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, LockedError

WAIT_S = 60.0
"""How long `publish` waits for another CLI writer, or for a starting daemon to answer."""
_POLL_S = 0.1

NOTHING_CHANGED = (
    "publish: nothing changed since the last generation (use --force to publish anyway)"
)


def cmd_publish(args: argparse.Namespace) -> int:
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.store.lock import lock_owner

    config = config_from_args(args)
    deadline = time.monotonic() + WAIT_S
    while True:
        owner = lock_owner(config.state_path)
        if owner is not None and owner.daemon:
            return _publish_by_daemon(config, args.force, owner.pid, deadline)
        if owner is None:
            try:
                engine = Engine(config)
                break
            except LockedError:
                owner = lock_owner(config.state_path)  # taken between the look and the try
                if owner is None or time.monotonic() >= deadline:
                    raise
                continue
        if time.monotonic() >= deadline:
            raise LockedError(
                f"publish: another amygdala-daemon writer (pid {owner.pid}) held "
                f"{config.state_path} for {WAIT_S:.0f} s; nothing was published"
            )
        time.sleep(_POLL_S)
    try:
        written = engine.publish(force=args.force)
    finally:
        engine.close()
    if written is None:
        print(NOTHING_CHANGED)
    else:
        print(f"published {written}")
        fire_hooks(config, written)
    return 0


def _publish_by_daemon(config: Config, force: bool, pid: int, deadline: float) -> int:
    # The daemon owns the state: ask it to publish rather than fight for the lock.
    reply = _ask_daemon(config, {"op": "publish", "force": force}, deadline)
    if not reply.get("ok"):
        raise AmygdalaError(f"publish: the daemon (pid {pid}) said: {reply.get('error')}")
    if reply.get("published"):
        print(f"published {reply['path']} (by the daemon, pid {pid})")
    else:
        print(NOTHING_CHANGED)
    return 0


def _ask_daemon(config: Config, request: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Send one request to the running daemon's websocket and return its reply.

    A refused or unfinished handshake is retried until `deadline` while a daemon still holds
    the lock: it takes the lock before it loads the model and opens the websocket.
    """
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    from amygdala_daemon.store.lock import lock_owner

    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::") else config.server.host
    url = f"ws://{host}:{config.server.port}/"
    headers = {"Authorization": f"Bearer {config.server.token}"} if config.server.token else None
    while True:
        try:
            connection = connect(url, additional_headers=headers, open_timeout=10)
        except (ConnectionRefusedError, TimeoutError) as exc:
            # Not listening yet, or too busy starting to finish the handshake.
            owner = lock_owner(config.state_path)
            if owner is None or not owner.daemon or time.monotonic() >= deadline:
                raise _no_answer(url, exc) from None
            time.sleep(_POLL_S * 2)
            continue
        except (OSError, WebSocketException) as exc:
            raise _no_answer(url, exc) from None
        with connection:
            try:
                connection.send(json.dumps(request))
                while True:
                    reply: dict[str, Any] = json.loads(connection.recv(timeout=600))
                    if reply.get("op") == request["op"] or (
                        "error" in reply and "event" not in reply
                    ):
                        return reply
            except (OSError, WebSocketException, TimeoutError) as exc:
                raise _no_answer(url, exc) from None


def _no_answer(url: str, exc: BaseException) -> AmygdalaError:
    return AmygdalaError(f"the daemon holds the state directory but {url} did not answer: {exc}")


def fire_hooks(config: Config, generation_dir: Path) -> None:
    from amygdala_daemon.serving.notify import fire, published_event

    if config.notify.command or config.notify.url:
        for failure in fire(config.notify, published_event(generation_dir)):
            print(
                f"publish hook failed (the generation stays published): {failure}", file=sys.stderr
            )
