"""Scheduled jobs: a job the scheduler's shutdown cancels while the daemon stops is no error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from amygdala_daemon.serving.jobs import every, start_scheduler


async def cancel_a_running_job(stopping_first: bool, caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    started = asyncio.Event()

    async def waits_for_the_worker() -> None:
        started.set()
        await asyncio.Event().wait()  # a job still queued behind the batch in flight

    scheduler = start_scheduler(loop, stopping, {"job": (waits_for_the_worker, every(0.01))})
    await asyncio.wait_for(started.wait(), 10)
    if stopping_first:
        stopping.set()
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler.shutdown(wait=False)  # cancels the running job's future
        for _ in range(5):
            await asyncio.sleep(0)


async def test_a_job_cancelled_while_stopping_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await cancel_a_running_job(stopping_first=True, caplog=caplog)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_a_job_cancelled_otherwise_is_still_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await cancel_a_running_job(stopping_first=False, caplog=caplog)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("raised an exception" in message for message in errors), errors
