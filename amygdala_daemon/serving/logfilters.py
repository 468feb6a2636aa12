"""Logging filters that keep the daemon's log free of secrets and bounded under abuse.

At DEBUG the websockets library logs each request line and header, `?token=` and
`Authorization:` included; a client refused at the handshake is one INFO line each; and when
file descriptors run out asyncio reports the failed accept() about once a second. Filters sit on
those loggers, so they hold whatever handlers the process has.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

Clock = Callable[[], float]

REDACTED = "<redacted>"
# Shorter "secrets" would blank out ordinary words; the patterns below still catch them.
MIN_SECRET_CHARS = 6
SUMMARY_INTERVAL_S = 60.0

_TOKEN_QUERY = re.compile(r"(?i)([?&;]token=)[^&;#\s'\"]*")
# `Authorization: Bearer x` as websockets logs a header, and `('Authorization', 'Bearer x')`
# as a Headers repr inside an exception message.
_AUTHORIZATION = re.compile(r"(?i)(authorization['\"]?\s*[:,=]\s*['\"]?)[^'\"\r\n]*")


class Summary:
    """Counts events and says when a line about them is due: the first, then one per interval.

    >>> now = [0.0]
    >>> summary = Summary(60, clock=lambda: now[0])
    >>> summary.due(), summary.due(), summary.due()
    (1, None, None)
    >>> now[0] = 61.0
    >>> summary.due()
    3
    """

    def __init__(self, interval: float = SUMMARY_INTERVAL_S, clock: Clock = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.last: float | None = None
        self.count = 0

    def due(self) -> int | None:
        """Count one event; how many events a line written now covers, or None: not yet."""
        self.count += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return None
        covered, self.count, self.last = self.count, 0, now
        return covered


class RedactSecrets(logging.Filter):
    """Rewrites a record so that no token reaches the log.

    Blanks `token=` query values, Authorization header values, and every secret remembered
    (each token this process was configured with, the rotated ones included).
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def remember(self, secret: str) -> None:
        if len(secret) >= MIN_SECRET_CHARS:
            self.secrets.add(secret)

    def redact(self, text: str) -> str:
        text = _AUTHORIZATION.sub(rf"\1{REDACTED}", _TOKEN_QUERY.sub(rf"\1{REDACTED}", text))
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: render the traceback here, redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class Throttle(logging.Filter):
    """Passes the first record of each kind, then one per interval noting how many were held.

    `kind` names a record's kind, or None for records that always pass.
    """

    def __init__(
        self,
        kind: Callable[[logging.LogRecord], str | None],
        interval: float = SUMMARY_INTERVAL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.interval = interval
        self.clock = clock
        self.summaries: dict[str, Summary] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self.kind(record)
        if kind is None:
            return True
        summary = self.summaries.setdefault(kind, Summary(self.interval, self.clock))
        covered = summary.due()
        if covered is None:
            return False
        if covered > 1:
            first, newline, rest = record.getMessage().partition("\n")
            held = f" ({covered - 1} more held back since the last such line)"
            record.msg, record.args = first + held + newline + rest, None
        return True


def accept_failure(record: logging.LogRecord) -> str | None:
    """asyncio's report of an accept() that failed for lack of file descriptors or memory."""
    message = str(record.msg)
    return "accept" if message.startswith("socket.accept() out of system resource") else None


def handshake_refusal(record: logging.LogRecord) -> str | None:
    """websockets' line for each connection refused at the handshake, one kind per status."""
    if record.msg != "connection rejected (%d %s)":
        return None
    return record.getMessage()


REDACTOR = RedactSecrets()
WEBSOCKETS_LOG = logging.getLogger("websockets.server")


def install() -> RedactSecrets:
    """Put the filters on the websockets and asyncio loggers, once per process."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, Throttle) for f in asyncio_log.filters):
        asyncio_log.addFilter(Throttle(accept_failure))
    if REDACTOR not in WEBSOCKETS_LOG.filters:
        # Throttle first: a record it drops need not be redacted.
        WEBSOCKETS_LOG.addFilter(Throttle(handshake_refusal))
        WEBSOCKETS_LOG.addFilter(REDACTOR)
    # A client in this process (`publish` asking the daemon) logs its Authorization header.
    client_log = logging.getLogger("websockets.client")
    if REDACTOR not in client_log.filters:
        client_log.addFilter(REDACTOR)
    return REDACTOR
