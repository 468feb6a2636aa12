"""What the websocket allows: publish budgets, and settings that must fit the process's limits.

Publishing is the one request that costs something lasting: each generation written prunes the
oldest kept one, so a client that forces `publish.keep` publishes in a row removes every
rollback target. Every client together shares one budget, since opening more connections is free.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from amygdala_daemon.core.config import ServerConfig
from amygdala_daemon.core.errors import ConfigError

# File descriptors the daemon needs besides its websocket clients: the ledger and its WAL,
# the lock, the source, model files, CUDA's device handles and a publish in flight
# (13 measured on CPU; CUDA adds a few dozen).
FD_HEADROOM = 128

_ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]+")

Clock = Callable[[], float]


@dataclass(frozen=True)
class Refusal:
    """Why a publish request was not passed on, and when asking again can succeed."""

    error: str
    retry_after: float | None = None


class TokenBucket:
    """On average `per_minute` requests a minute, in bursts of at most as many; 0: no limit.

    >>> now = [0.0]
    >>> bucket = TokenBucket(2, clock=lambda: now[0])
    >>> bucket.take(), bucket.take(), bucket.take()
    (0.0, 0.0, 30.0)
    >>> now[0] = 30.0
    >>> bucket.take()
    0.0
    """

    def __init__(self, per_minute: float, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.tokens = per_minute
        self.updated = clock()

    def resize(self, per_minute: float) -> None:
        """A new rate; what was spent stays spent."""
        self._refill()
        self.tokens = min(self.tokens, per_minute) if self.per_minute else per_minute
        self.per_minute = per_minute

    def take(self) -> float:
        """0.0 when a request may go ahead (it is counted), else the seconds until one may."""
        if not self.per_minute:
            return 0.0
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.per_minute

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(
            self.per_minute, self.tokens + (now - self.updated) * self.per_minute / 60
        )
        self.updated = now


class PublishGate:
    """Decides which publish requests from websocket clients reach the daemon."""

    def __init__(self, config: ServerConfig, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.force_interval = config.force_publish_interval
        self.bucket = TokenBucket(config.publish_requests_per_minute, clock)
        self.last_forced: float | None = None

    def configure(self, config: ServerConfig) -> None:
        self.force_interval = config.force_publish_interval
        self.bucket.resize(config.publish_requests_per_minute)

    def admit(self, force: bool, authorized: bool) -> Refusal | None:
        """None when the request may go ahead (and is counted), else why not."""
        if force and not authorized:
            return Refusal("a forced publish needs the current server token; connect with it")
        now = self.clock()
        if force and self.last_forced is not None and self.force_interval:
            wait = self.last_forced + self.force_interval - now
            if wait > 0:
                return Refusal(
                    f"a forced publish was done {now - self.last_forced:.0f}s ago; the next is "
                    f"allowed in {wait:.0f}s (server.force_publish_interval = "
                    f"{self.force_interval:g})",
                    round(wait, 3),
                )
        wait = self.bucket.take()
        if wait > 0:
            return Refusal(
                f"too many publish requests: at most {self.bucket.per_minute:g} a minute from "
                f"all clients (server.publish_requests_per_minute); try again in {wait:.0f}s",
                round(wait, 3),
            )
        if force:
            self.last_forced = now
        return None


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE of this process; None when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def check_server_config(config: ServerConfig) -> None:
    """Refuse `[server]` settings the websocket cannot honour, naming the key.

    The open-file limit is the process's own, so this runs where the server will, not when
    the config is read.
    """
    for origin in config.allowed_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                "server.allowed_origins",
                f"{origin!r} is not an origin (scheme://host[:port], no path), as browsers send it",
            )
    limit = open_file_limit()
    if limit is not None and config.max_connections + FD_HEADROOM > limit:
        raise ConfigError(
            "server.max_connections",
            f"{config.max_connections} connections leave too few of the {limit} file "
            f"descriptors this process may open (at most {max(limit - FD_HEADROOM, 0)}; raise "
            "LimitNOFILE= or `ulimit -n`)",
        )
