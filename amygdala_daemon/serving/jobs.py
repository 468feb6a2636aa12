"""The daemon's scheduled jobs on APScheduler 3.x: publish, checkpoint and reconcile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

Job = Callable[[], Awaitable[object]]


def quiet_on_stop(job: Job, stopping: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """`job`, except that a cancellation while the daemon stops is not an error.

    The scheduler's shutdown cancels a job still waiting for the worker thread, and
    APScheduler would log that as a failed job with a traceback. The shutdown's own
    checkpoint, queued right behind, does what the cancelled job was waiting to do.
    """

    async def run() -> None:
        try:
            await job()
        except asyncio.CancelledError:
            if not stopping.is_set():
                raise

    return run


def start_scheduler(
    loop: asyncio.AbstractEventLoop,
    stopping: asyncio.Event,
    jobs: dict[str, tuple[Job, BaseTrigger]],
) -> AsyncIOScheduler:
    """Start one scheduler running each job (by id) on its trigger."""
    scheduler = AsyncIOScheduler(event_loop=loop)
    # One instance of each job at a time; a late run is coalesced, never queued behind itself.
    options: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    for job_id, (job, trigger) in jobs.items():
        scheduler.add_job(quiet_on_stop(job, stopping), trigger, id=job_id, name=job_id, **options)
    scheduler.start()
    return scheduler


def every(seconds: float) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds)
