"""logfilters.py: no token reaches the daemon's log, and floods of one line are summarised."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from amygdala_daemon.serving.logfilters import REDACTED, RedactSecrets, Throttle, accept_failure
from tests.helpers.daemon import DaemonProcess, request, wait_for
from tests.helpers.graphs import sample_nodes

ACCEPT_FAILURE = "socket.accept() out of system resource"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing through a real formatter into a buffer."""
    logger = logging.getLogger("tests.logfilters")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)
    logger.filters.clear()


def test_redaction_blanks_query_tokens_headers_and_known_secrets(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured
    redactor = RedactSecrets()
    redactor.remember("remembered-secret")
    redactor.remember("abc")  # too short to blank out everywhere; the patterns still apply
    logger.addFilter(redactor)
    logger.debug("< GET /?token=%s&other=1 HTTP/1.1", "q-secret")
    logger.debug("< %s: %s", "Authorization", "Bearer h-secret")
    logger.info("rotated to %s", "remembered-secret")
    try:
        raise ValueError("bad headers: Headers([('Authorization', 'Bearer e-secret')])")
    except ValueError:
        logger.exception("handshake failed for /?token=e2-secret")
    text = buffer.getvalue()
    for secret in ("q-secret", "h-secret", "remembered-secret", "e-secret", "e2-secret"):
        assert secret not in text, text
    assert f"GET /?token={REDACTED}&other=1 HTTP/1.1" in text
    assert f"Authorization: {REDACTED}" in text
    assert f"rotated to {REDACTED}" in text
    assert "Traceback" in text and "ValueError: bad headers" in text, "the traceback stays"
    assert "abc" not in redactor.secrets


def test_asyncio_accept_failures_pass_once_then_as_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    asyncio_log = logging.getLogger("asyncio")
    installed = list(asyncio_log.filters)
    for existing in installed:
        asyncio_log.removeFilter(existing)
    asyncio_log.addFilter(throttle := Throttle(accept_failure, 60.0, clock))
    loop = asyncio.new_event_loop()
    exhausted = OSError(errno.EMFILE, "Too many open files")
    try:
        # The report asyncio's own accept loop makes when it runs out of descriptors.
        for _ in range(1000):
            loop.call_exception_handler({"message": ACCEPT_FAILURE, "exception": exhausted})
        clock.now += 61
        loop.call_exception_handler({"message": ACCEPT_FAILURE, "exception": exhausted})
        loop.call_exception_handler({"message": "something else went wrong"})
    finally:
        loop.close()
        asyncio_log.removeFilter(throttle)
        for existing in installed:
            asyncio_log.addFilter(existing)
    lines = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    accepts = [line for line in lines if line.startswith(ACCEPT_FAILURE)]
    assert len(accepts) == 2, lines
    assert accepts[1].startswith(f"{ACCEPT_FAILURE} (999 more held back since the last such line)")
    assert any(line.startswith("something else went wrong") for line in lines)


@pytest.mark.slow
def test_no_token_reaches_a_verbose_daemons_log(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    right, wrong, wrong_bearer = "tok-right-7f3a9c", "tok-wrong-42b1d0", "tok-wrong-bearer-5e8"
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20], server={"token": right})
    daemons.append(daemon)
    with daemon.log.open("a") as log:
        daemon.process = subprocess.Popen(
            [sys.executable, "-m", "amygdala_daemon", "-v", "--config", str(daemon.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    wait_for(daemon.generation, what="the first generation")
    with connect(f"{daemon.url()}?token={right}", open_timeout=10) as client:
        assert request(client, {"op": "status"})["ok"]
    for query, headers in (
        (f"?token={wrong}", {}),
        ("", {"Authorization": f"Bearer {wrong_bearer}"}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(daemon.url() + query, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 401
    bearer = {"Authorization": f"Bearer {right}"}
    with connect(daemon.url(), additional_headers=bearer, open_timeout=10) as client:
        assert request(client, {"op": "status"})["ok"]
    assert daemon.stop() == 0
    log_text = daemon.log.read_text()
    assert " DEBUG websockets.server: < GET /" in log_text, "the request lines were logged"
    assert f"token={REDACTED}" in log_text and f"Authorization: {REDACTED}" in log_text
    for secret in (right, wrong, wrong_bearer):
        assert secret not in log_text
