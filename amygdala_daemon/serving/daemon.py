"""The long-running service: wires the engine, the scheduler, the websocket and systemd together.

All writer work (sync, publish, checkpoint, reload) runs on one worker thread, in order, so the
event loop (websocket, watchdog, signals) never stalls behind a batch and the engine is never
used from two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.delete_guard import DeleteHold
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.schedule import (
    DebounceState,
    debounce_due,
    poll_timeout,
)
from amygdala_daemon.engine.publish import resume
from amygdala_daemon.engine.writer import Engine, SyncReport
from amygdala_daemon.serving.holds import confirm_delete
from amygdala_daemon.serving.jobs import every, start_scheduler
from amygdala_daemon.serving.limits import check_server_config
from amygdala_daemon.serving.notify import fire, published_event
from amygdala_daemon.serving.requests import dispatch
from amygdala_daemon.serving.sdnotify import Notifier, watchdog_interval
from amygdala_daemon.serving.server import EventServer, check_listening_address
from amygdala_daemon.sources import ClosableSource, HintingSource, MemorySource, open_source
from amygdala_daemon.sources.errors import SourceError
from amygdala_daemon.store.config_file import load, publish_trigger
from amygdala_daemon.store.errors import StateWriteError
from amygdala_daemon.views.status import SourceState, status_report

log = logging.getLogger(__name__)
T = TypeVar("T")


class Daemon:
    """`amygdala-daemon run`: watch the source, keep the vectors fresh, answer on a websocket."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="amygdala-worker")
        self.hook_executor = ThreadPoolExecutor(2, thread_name_prefix="amygdala-hook")
        self.hook_tasks: set[asyncio.Future[None]] = set()
        self.engine: Engine | None = None
        self.source: MemorySource = open_source(config.source)
        self.server: EventServer | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.reload_requested = False
        self.debounce = DebounceState()
        self.source_error: str | None = None
        self.backlog: int | None = None
        self.generation: int | None = None
        self.last_sync: SyncReport | None = None
        self.held: DeleteHold | None = None
        # `run --once --confirm-delete`: a held mass delete is applied.
        self.confirm_deletes = False
        self.once = False  # `run --once`: a source error is the one error line, not also a log

    # -- plumbing ---------------------------------------------------------------------

    async def _work(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function` on the worker thread."""
        assert self.loop is not None
        return await self.loop.run_in_executor(self.executor, function, *args)

    def emit(self, event: str, **data: Any) -> None:
        """Broadcast an event; safe to call from the worker thread."""
        if self.server is None or self.loop is None:
            return
        payload = {"event": event, "time": time.time(), **data}
        self.loop.call_soon_threadsafe(self.server.hub.broadcast, payload)

    def _status_line(self) -> str:
        backlog = "unknown" if self.backlog is None else str(self.backlog)
        generation = "none" if self.generation is None else str(self.generation)
        error = f", source error: {self.source_error}" if self.source_error else ""
        held = self.held
        hold = f", mass delete held: {held.deletes} of {held.live} nodes" if held else ""
        return f"backlog {backlog}, generation {generation}{error}{hold}"

    # -- the work ---------------------------------------------------------------------

    def _sync_now(self) -> int:
        """One pass over the source (worker thread); the number of ledger changes."""
        assert self.engine is not None
        report = self.last_sync = self.engine.sync(
            self.source,
            on_change=lambda event, data: self.emit(event, **data),
            should_stop=self.stopping.is_set,
        )
        self.held = report.held
        if report.held is not None:
            self.backlog = report.held.deletes + report.held.upserts
        else:
            self.backlog = self.engine.pending(self.source) if self.stopping.is_set() else 0
        return report.changes

    async def poll(self) -> None:
        try:
            changes = await self._work(self._sync_now)
        except SourceError as exc:
            # Once when it starts and once per new message: a lasting outage is not news
            # at every poll.
            if str(exc) != self.source_error and not self.once:
                log.warning("source error: %s", exc)
                self.emit("source_error", error=str(exc))
            self.source_error, self.backlog = str(exc), None
        except StateWriteError as exc:
            # The ledger rolled the batch back: nothing is lost, the next poll tries again.
            log.error("%s", exc)
            self.emit("error", error=str(exc))
        else:
            if self.source_error is not None:
                log.info("source recovered")
                self.emit("source_recovered")
                self.source_error = None
            if changes:
                self.debounce = DebounceState(
                    self.debounce.pending_changes + changes, time.monotonic()
                )
        self.notifier.status(self._status_line())

    def _start_hints(self) -> None:
        """A source that can tell when the graph changed wakes the poll loop at once."""
        if isinstance(self.source, HintingSource) and self.loop is not None:
            loop = self.loop

            def hint() -> None:
                loop.call_soon_threadsafe(self.wake.set)

            self.source.start_hints(hint)

    def _close_source(self) -> None:
        """Sources holding a connection (mcp) let it go."""
        if isinstance(self.source, ClosableSource):
            self.source.close()

    def _publish_now(self, force: bool) -> Path | None:
        assert self.engine is not None
        return self.engine.publish(force=force)

    async def publish(self, force: bool = False) -> dict[str, Any]:
        try:
            written = await self._work(self._publish_now, force)
        except AmygdalaError as exc:
            log.error("%s", exc)
            self.emit("error", error=str(exc))
            return {"ok": False, "op": "publish", "error": str(exc)}
        self.debounce = DebounceState()
        if written is None:
            return {"ok": True, "op": "publish", "published": False}
        event = published_event(written)
        self.generation = event["generation"]
        self.emit("published", **event)
        self.notifier.status(self._status_line())
        if self.config.notify.command or self.config.notify.url:
            # Hooks run beside the worker: a hanging one never delays the next publish.
            task = asyncio.ensure_future(self._fire_hooks(event))
            self.hook_tasks.add(task)
            task.add_done_callback(self.hook_tasks.discard)
        return {"ok": True, "op": "publish", "published": True, **event}

    async def _fire_hooks(self, event: dict[str, Any]) -> None:
        assert self.loop is not None
        failures = await self.loop.run_in_executor(
            self.hook_executor, fire, self.config.notify, event
        )
        for failure in failures:
            self.emit("error", error=failure, hook=True, generation=event["generation"])

    async def checkpoint(self) -> None:
        assert self.engine is not None
        await self._work(self.engine.checkpoint)

    async def scheduled_checkpoint(self) -> None:
        """A checkpoint the disk refuses is reported and tried again on the next schedule."""
        try:
            await self.checkpoint()
        except StateWriteError as exc:
            log.error("%s", exc)
            self.emit("error", error=str(exc))

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Websocket requests."""
        return await dispatch(request, self)

    async def status_reply(self) -> dict[str, Any]:
        """`status --json`, plus what only the running daemon knows."""
        assert self.loop is not None
        # The daemon knows its source's state: reading the source again here would open a
        # second connection (or a second stdio server) per request.
        held = self.held.to_json() if self.held is not None else None
        state = SourceState(self.source.describe(), self.backlog, self.source_error, held)
        report = await self.loop.run_in_executor(None, status_report, self.config, state)
        counters = self.engine.extraction_counters if self.engine is not None else None
        report["daemon"] = {
            "source_error": self.source_error,
            "forward_sequences": counters.sequences if counters else 0,
            "forward_batches": counters.batches if counters else 0,
        }
        return report

    async def confirm_delete(self, key: str | None = None) -> dict[str, Any]:
        """Apply the held mass delete (`holds.confirm_delete`)."""
        return await confirm_delete(self, key)

    # -- reload -----------------------------------------------------------------------

    async def reload(self) -> None:
        """SIGHUP: reread the config file; keep the old one if the new one is bad."""
        self.notifier.reloading()
        try:
            fresh = load(self.config_path)
            fresh = replace(fresh, state_dir=self.config.state_dir)
            check_server_config(fresh.server)
            check_listening_address(self.config.server, fresh.server)
            trigger = publish_trigger(fresh.publish.interval)
            assert self.engine is not None
            await self._work(self.engine.reconfigure, fresh)
        except AmygdalaError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.emit("error", error=f"reload refused: {exc}")
        else:
            if fresh.source != self.config.source:
                self._close_source()
                self.source = open_source(fresh.source)
                self._start_hints()
            if fresh.publish.interval != self.config.publish.interval and self.scheduler:
                self.scheduler.reschedule_job("publish", trigger=trigger)
            if self.server is not None:
                self.server.configure(fresh.server)
            self.config = fresh
            log.info("configuration reloaded")
        self.notifier.ready(self._status_line())

    # -- lifecycle --------------------------------------------------------------------

    def _install_signals(self) -> None:
        assert self.loop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.request_stop)
        self.loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()

    def _start_scheduler(self) -> AsyncIOScheduler:
        assert self.loop is not None

        async def reconcile() -> None:
            self.wake.set()

        daemon = self.config.daemon
        return start_scheduler(
            self.loop,
            self.stopping,
            {
                "publish": (self.publish, publish_trigger(self.config.publish.interval)),
                "checkpoint": (
                    self.scheduled_checkpoint,
                    every(daemon.checkpoint_interval),
                ),
                "reconcile": (reconcile, every(daemon.reconcile_interval)),
            },
        )

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def run_once(self) -> int:
        """`run --once`: drain pending work, publish if anything changed, exit."""
        self.once = True
        self.loop = asyncio.get_running_loop()
        self.engine = await self._work(Engine, self.config)
        self.engine.confirm_deletes = self.confirm_deletes
        try:
            await self.poll()
            if self.source_error:
                raise SourceError(self.source_error)
            published = await self.publish(force=False) if self.engine.fold is not None else {}
            await self.checkpoint()
            if self.hook_tasks:
                await asyncio.gather(*self.hook_tasks)
            if published.get("ok") is False:
                raise AmygdalaError(published["error"])
        finally:
            await self._work(self.engine.close)
            await self._work(self._close_source)
            self.executor.shutdown()
            self.hook_executor.shutdown(wait=False)
        return 0

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        check_server_config(self.config.server)  # before the model load, not after
        self.engine = await self._work(Engine, self.config)
        self.engine.lock.mark_daemon()  # `publish` from the CLI asks over the websocket now
        try:
            # Recovery happened on open; load the model now so READY means ready.
            await self._work(self.engine.load_model)
            assert self.engine.fold is not None, "a loaded model gives a fold"
            owed = await self._work(
                resume, self.engine.published, self.config.publish, self.engine.fold.ledger_seq
            )
            # Changes a crash kept from their debounced publish: published as they would have.
            self.debounce = DebounceState(owed, time.monotonic()) if owed else self.debounce
            self.server = EventServer(self.config.server, self.handle)
            await self.server.start()
            log.info("websocket on ws://%s:%d", self.config.server.host, self.server.bound_port)
            self._install_signals()
            self.scheduler = self._start_scheduler()
            self._start_hints()
            watchdog_every = watchdog_interval()
            watchdog = (
                asyncio.create_task(self._watchdog(watchdog_every)) if watchdog_every else None
            )
            self.notifier.ready(self._status_line())
            log.info(
                "ready: polling %s every %.1fs",
                self.source.describe(),
                self.config.daemon.poll_interval,
            )
            while not self.stopping.is_set():
                # Cleared before the poll, not after: a hint that arrives while the poll runs
                # may be about a write the poll did not see, so it must cause another poll.
                self.wake.clear()
                if self.reload_requested:
                    self.reload_requested = False
                    await self.reload()
                await self.poll()
                publish = self.config.publish
                if debounce_due(
                    self.debounce,
                    time.monotonic(),
                    publish.publish_after_s,
                    publish.publish_after_changes,
                ):
                    await self.publish()
                timeout = poll_timeout(
                    self.debounce, self.config.daemon.poll_interval, publish.publish_after_s
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)
            await self.shutdown(watchdog)
        finally:
            if self.engine is not None:
                await self._work(self.engine.close)
            await self._work(self._close_source)
            self.executor.shutdown()
            self.hook_executor.shutdown(wait=False)
            self.notifier.close()
        return 0

    async def shutdown(self, watchdog: asyncio.Task[None] | None) -> None:
        """SIGTERM: stop accepting, finish the batch, checkpoint, close clients with 1001."""
        log.info("stopping")
        self.notifier.stopping()
        if self.server is not None:
            self.server.stop_accepting()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        await self.scheduled_checkpoint()  # queued behind the batch in flight: it runs after it
        if self.server is not None:
            await self.server.close()
        if watchdog is not None:
            watchdog.cancel()
        log.info("stopped cleanly")
