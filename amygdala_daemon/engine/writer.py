"""The writer: wires source -> extractor -> ledger -> fold -> publisher for one state directory.

`Engine` holds the writer lock for its lifetime and only wires: ingestion lives in `ingest`,
publishing in `publish`, the settings guard in `settings`, recovery in `store.recovery`. It
loads the model only when a node needs a forward pass: recovery, refolds and publishing never do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from amygdala_daemon.core.changes import Change, Write
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.delete_guard import DeleteHold, check_deletes
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.vectors import tracks_covariance
from amygdala_daemon.engine.ingest import (
    ChunkRunner,
    EventCallback,
    Ingest,
    ProgressFactory,
    SyncReport,
    TrackedConcepts,
    plan_writes,
)
from amygdala_daemon.engine.publish import Publisher
from amygdala_daemon.engine.reuse import keep_retracted, reuse_kept
from amygdala_daemon.engine.settings import check_model_settings, model_settings, record_settings
from amygdala_daemon.model.description import describe
from amygdala_daemon.model.extractor import Extractor, ExtractorCounters
from amygdala_daemon.sources import MemorySource
from amygdala_daemon.sources.base import Changes, Snapshot, diff
from amygdala_daemon.store.atomic import remove_leftovers
from amygdala_daemon.store.checkpoint import save_checkpoint
from amygdala_daemon.store.errors import StateWriteError, os_write_error
from amygdala_daemon.store.generations import current_manifest
from amygdala_daemon.store.ledger import Ledger, remove_database
from amygdala_daemon.store.lock import StateLock
from amygdala_daemon.store.recovery import fold_changes, recover_fold, refold, stored_model_info

log = logging.getLogger(__name__)

__all__ = ["Engine", "EventCallback", "ProgressFactory", "SyncReport", "model_settings"]


def load_extractor(config: Config) -> tuple[Extractor, ModelInfo]:
    """Load the configured model, and describe the activations it will make."""
    from amygdala_daemon.model.loading import load_model

    model = config.model
    loaded = load_model(model, config.state_path)
    extractor = Extractor.from_config(model, loaded)
    return extractor, describe(loaded, extractor, model)


class Engine:
    """Read-write access to one state directory."""

    def __init__(
        self,
        config: Config,
        progress: ProgressFactory | None = None,
        *,
        for_full_rebuild: bool = False,
    ) -> None:
        """Open the state directory for writing.

        `for_full_rebuild` skips the check that the model settings match the stored
        activations: a full rebuild replaces them all.
        """
        self.config = config
        self.paths = StatePaths(config.state_path)
        self.progress = progress
        try:
            self.lock = StateLock(self.paths.root).acquire()
        except OSError as exc:
            failed = os_write_error(exc, exc.filename or self.paths.lock)
            raise failed.kept("nothing was changed") from None
        try:
            # Temporary files of a writer killed mid-write: nobody else writes them now.
            for directory in (self.paths.root, self.paths.published):
                remove_leftovers(directory)
            self.ledger = Ledger(self.paths.ledger)
            if not for_full_rebuild:
                check_model_settings(self.ledger, config)
            self.model_info = stored_model_info(self.ledger)
            self.fold: Accumulators | None = None
            if self.model_info is not None and not for_full_rebuild:
                self.fold = recover_fold(self.ledger, config, self.shape)
            self._loaded: tuple[Extractor, ModelInfo] | None = None
            # Set while a distributed rebuild runs: the model runs on its workers instead.
            self._runner: ChunkRunner | None = None
            self._checkpoint_seq = self.fold.ledger_seq if self.fold else 0
            # A problem is logged when it appears, not again at every sync while it lasts.
            self._problems_logged: set[str] = set()
            # Mass-delete guard: `confirm_deletes` lets every hold through (run --once
            # --confirm-delete); `confirmed_hold` the one hold a user confirmed by its key.
            self.confirm_deletes = False
            self.confirmed_hold: str | None = None
            self._hold_reported: str | None = None
        except BaseException:
            self.lock.release()
            raise

    @property
    def shape(self) -> tuple[int, int]:
        assert self.model_info is not None
        return (len(self.model_info.layers), self.model_info.hidden_size)

    @property
    def published(self) -> Path:
        return self.paths.published

    def close(self) -> None:
        self.ledger.close()
        self.lock.release()

    def _rebuild_staged(self, snapshot: Snapshot) -> SyncReport:
        """Build a new ledger beside the old one, then replace the old one in one step.

        Until the replacement, the old ledger, checkpoint and generations are whole and in
        use (`status`, `report`, and `run` after an interrupted rebuild). After it, the old
        checkpoint names another ledger and is refolded away if the new one is not saved.
        """
        old, old_info, old_fold = self.ledger, self.model_info, self.fold
        staged_path = self.paths.staged_ledger
        remove_database(staged_path)
        staged = Ledger(staged_path)
        try:
            # The sequence keeps counting up, and the registry epoch with it, across rebuilds.
            staged.set_meta_committed("seq", str(old.seq))
            staged.set_meta_committed("registry_epoch", old.get_meta("registry_epoch") or "0")
            record_settings(staged, self.config)
            self.ledger, self.model_info, self.fold = staged, None, None
            report = self.apply_snapshot(snapshot)
            old.replace_with(staged)
        except BaseException:
            self.ledger, self.model_info, self.fold = old, old_info, old_fold
            raise
        finally:
            staged.close()
            remove_database(staged_path)
        self.ledger = old
        return report

    def _rebuild_distributed(self, snapshot: Snapshot) -> SyncReport:
        """`_rebuild_staged` with the model on Ray workers; this process stays the one writer."""
        from amygdala_daemon.distributed.pool import RayRunner

        # Workers start, and load the model, before anything is staged: bad input fails here.
        self._runner = RayRunner(self.config, self.config.distributed)
        try:
            return self._rebuild_staged(snapshot)
        finally:
            self._runner.close()
            self._runner = None

    def _covariance(self) -> bool:
        """Whether the fold keeps the full co-moment, for the configured method and width."""
        return self.model_info is not None and tracks_covariance(
            self.config.vectors, self.model_info.hidden_size
        )

    # -- model ------------------------------------------------------------------------

    @property
    def model_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def extraction_counters(self) -> ExtractorCounters | None:
        """Forward passes made so far; None before the model is loaded."""
        return self._loaded[0].counters if self._loaded is not None else None

    def load_model(self) -> Extractor:
        """Load the model (once); a ledger with no entries yet adopts its layers and width."""
        if self._loaded is None:
            self._loaded = load_extractor(self.config)
        extractor, info = self._loaded
        self._adopt_model(info)
        return extractor

    def _adopt_model(self, info: ModelInfo) -> None:
        """An empty ledger adopts the model's layers and width; a full one must match them."""
        if self.model_info is None or self.ledger.live_count() == 0:
            self.model_info = info
            self.ledger.set_meta_committed("model", info.to_json())
            self.fold = Accumulators(
                self.shape, self.config.labels, self.ledger.seq, covariance=self._covariance()
            )
        elif asdict(self.model_info) != asdict(info):
            raise InputError(
                f"the model now loads as {info.model_id} layers {info.layers}, but the "
                f"ledger holds activations of {self.model_info.model_id} layers "
                f"{self.model_info.layers}; run `amygdala-daemon rebuild`"
            )

    def _adopted_runner(self) -> ChunkRunner:
        assert self._runner is not None
        self._adopt_model(self._runner.model_info)
        return self._runner

    # -- ingestion --------------------------------------------------------------------

    def _apply(self, writes: list[Write]) -> list[Change]:
        changes = self.ledger.apply(writes)
        if changes:
            assert self.fold is not None, "entries exist, so the fold does"
            fold_changes(self.fold, changes, self.ledger)
            keep_retracted(self.ledger, self.config, changes)
        return changes

    def _hold(
        self, snapshot: Snapshot, changes: Changes, notify: EventCallback
    ) -> DeleteHold | None:
        """The mass-delete hold on this sync, unless confirmed; reported once per distinct hold."""
        empty = not (snapshot.nodes or snapshot.rejected or snapshot.pending)
        upserts = len(changes.upserts) + len(changes.rejected)
        live = len(self.ledger.known_hashes())
        fraction = self.config.source.max_delete_fraction
        hold = check_deletes(changes.deletes, live, upserts, fraction, empty)
        if hold is None or self.confirm_deletes or hold.key == self.confirmed_hold:
            if hold is not None:
                log.warning("applying %d confirmed deletes of %d nodes", hold.deletes, live)
            self._hold_reported = self.confirmed_hold = None
            return None
        self.confirmed_hold = None  # a confirmation answers one hold, never a later one
        if hold.key != self._hold_reported:
            log.warning("%s", hold.message())
            notify("delete_held", hold.to_json())
            self._hold_reported = hold.key
        return hold

    def pending(self, source: MemorySource) -> int:
        """How many source nodes differ from the ledger (the backlog)."""
        return len(diff(source.snapshot(), self.ledger.known_hashes()))

    def sync(
        self,
        source: MemorySource,
        on_change: EventCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SyncReport:
        """Bring the ledger and the fold up to date with the source.

        Only new or changed nodes reach the model, once each, in chunks that each commit in
        one transaction. `should_stop` is asked between chunks (graceful shutdown).
        """
        return self.apply_snapshot(source.snapshot(), on_change, should_stop)

    def apply_snapshot(
        self,
        snapshot: Snapshot,
        on_change: EventCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SyncReport:
        """`sync` for a snapshot already read."""
        report = SyncReport(problems=list(snapshot.problems))
        for problem in dict.fromkeys(snapshot.problems):
            if problem not in self._problems_logged:
                log.warning("source problem: %s", problem)
        self._problems_logged = set(snapshot.problems)
        notify = on_change or (lambda _event, _data: None)
        changes = diff(snapshot, self.ledger.known_hashes())
        report.held = self._hold(snapshot, changes, notify)
        if report.held is not None:
            return report  # held whole: its adds and edits come from the same suspect read
        known = set(self.fold.known.names) if self.fold is not None else set()
        tracked = TrackedConcepts(known, self.config.concepts.max_tracked, self.config.labels)
        plan = plan_writes(changes, self.config.concepts.aliases, report, notify, tracked)
        report.changes += len(self._apply(plan.immediate))
        plan.to_extract = reuse_kept(
            self.ledger, self.config, plan.to_extract, self._apply, report, notify
        )
        if plan.to_extract:
            ingest = Ingest(self._apply, self.load_model, lambda: self.ledger.seq, self.progress)
            ingest.runner = self._adopted_runner if self._runner is not None else None
            ingest.extract(plan.to_extract, report, notify, should_stop)
        return report

    # -- checkpoint, publish, rebuild -------------------------------------------------

    def checkpoint(self) -> bool:
        """Save the fold if the ledger moved since the last save; drop what it now holds."""
        if self.fold is None or self.fold.ledger_seq == self._checkpoint_seq:
            return False
        previous = self._checkpoint_seq
        try:
            save_checkpoint(self.fold, self.paths.checkpoint, self.ledger.ledger_id)
        except StateWriteError as exc:
            # The ledger holds every change: the next checkpoint (or a refold) catches up.
            raise exc.kept("the previous checkpoint is still whole") from None
        self._checkpoint_seq = self.fold.ledger_seq
        # Keep one checkpoint's worth of retracted entries: a reader that loaded the
        # previous checkpoint a moment ago can still replay from it.
        self.ledger.forget_retracted(previous)
        return True

    def reconfigure(self, config: Config) -> None:
        """Adopt a reloaded config; a label change refolds, a model change is refused."""
        if model_settings(config) != model_settings(self.config):
            raise InputError(
                "[model] settings and concepts.aliases cannot change on reload; "
                "run `amygdala-daemon rebuild`"
            )
        tracked = self.fold.covariance if self.fold is not None else False
        labels_changed = config.labels != self.config.labels
        self.config = config
        if self.model_info is not None and (labels_changed or self._covariance() != tracked):
            self.fold = refold(self.ledger, self.shape, config.labels, self._covariance())

    def publish(self, force: bool = False) -> Path | None:
        """Write a new generation; None when nothing changed since the newest one."""
        if self.fold is None or self.model_info is None:
            raise AmygdalaError("nothing to publish yet: no node has been ingested")
        publisher = Publisher(self.ledger, self.config, self.model_info)
        try:
            return publisher.publish(self.fold, datetime.now(UTC), force=force)
        except (StateWriteError, OSError) as exc:
            if isinstance(exc, StateWriteError):
                failed = exc
            else:
                failed = os_write_error(exc, exc.filename or self.published)
            current = current_manifest(self.published)
            kept = f"generation {current['generation']} is still current" if current else ""
            raise failed.kept(kept or "nothing is published yet") from None

    def rebuild(self, source: MemorySource, from_cache: bool = False) -> SyncReport:
        """Recompute everything; `from_cache` refolds stored activations without the model."""
        if from_cache:
            if self.model_info is None:
                raise AmygdalaError("rebuild --from-cache: the ledger holds no activations yet")
            self.fold = refold(self.ledger, self.shape, self.config.labels, self._covariance())
            report = SyncReport()
        else:
            # Read the source and load the model before forgetting anything: bad input
            # fails here, with the old state intact.
            snapshot = source.snapshot()
            if self.config.distributed.engine == "ray":
                report = self._rebuild_distributed(snapshot)
            else:
                if self._loaded is None:
                    self._loaded = load_extractor(self.config)
                report = self._rebuild_staged(snapshot)
        # Only a rebuild may renumber the published rows.
        self.ledger.renumber_registry()
        self._checkpoint_seq = -1
        self.checkpoint()
        if self.fold is not None:
            self.publish(force=True)
        return report
