"""When to publish: pure decisions over timestamps and counters, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

from amygdala_daemon.core.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The scheduler adds the interval to today's date: a far longer one overflows its datetimes.
MAX_INTERVAL_DAYS = 365


@dataclass(frozen=True)
class PublishSchedule:
    """Either a fixed interval in seconds or a 5-field cron expression."""

    interval_s: float | None = None
    cron: str | None = None


def parse_interval(text: str) -> PublishSchedule:
    """Parse `publish.interval`.

    >>> parse_interval("5m")
    PublishSchedule(interval_s=300.0, cron=None)
    >>> parse_interval("*/10 * * * *").cron
    '*/10 * * * *'
    """
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
        if seconds <= 0:
            raise ConfigError("publish.interval", f"{text!r} must be a positive duration")
        if seconds > MAX_INTERVAL_DAYS * _UNIT_SECONDS["d"]:
            raise ConfigError(
                "publish.interval", f"{text!r} is longer than the maximum {MAX_INTERVAL_DAYS}d"
            )
        return PublishSchedule(interval_s=seconds)
    fields = text.split()
    if len(fields) == 5 and all(re.fullmatch(r"[\d*/,\-A-Za-z]+", f) for f in fields):
        return PublishSchedule(cron=text.strip())
    raise ConfigError(
        "publish.interval",
        f"{text!r} is neither a duration (30s, 5m, 1h) nor a 5-field cron expression",
    )


@dataclass(frozen=True)
class DebounceState:
    """Changes applied since the last publish, and when the latest one landed."""

    pending_changes: int = 0
    last_change_at: float | None = None


def debounce_due(
    state: DebounceState, now: float, publish_after_s: float, publish_after_changes: int
) -> bool:
    """True when the debounce rule says: publish now.

    The rule: enough changes have piled up, and the graph has been quiet for
    `publish_after_s` since the last one. `publish_after_s = 0` turns the rule off.
    """
    if publish_after_s <= 0 or state.last_change_at is None:
        return False
    if state.pending_changes < publish_after_changes:
        return False
    return now - state.last_change_at >= publish_after_s


def poll_timeout(state: DebounceState, poll_interval: float, publish_after_s: float) -> float:
    """How long the daemon may sleep before its next poll.

    With changes waiting on the debounce, it wakes in time to publish them.

    >>> poll_timeout(DebounceState(), 10.0, 2.0)
    10.0
    >>> poll_timeout(DebounceState(3, 100.0), 10.0, 2.0)
    2.0
    """
    if publish_after_s > 0 and state.pending_changes:
        return min(poll_interval, publish_after_s)
    return poll_interval
