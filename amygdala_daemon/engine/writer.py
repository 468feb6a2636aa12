"""The writer: wires source -> extractor -> ledger -> fold -> publisher for one state directory.

`Engine` holds the writer lock for its lifetime. It loads the model only when a node needs a
forward pass: recovery, refolds and publishing never do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amygdala_daemon.core.changes import Change, DeleteNode, SetStatus, StoreEntry, Write
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import ModelInfo, settings_fingerprint
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.engine.publish import build_release
from amygdala_daemon.model.extractor import Extractor
from amygdala_daemon.sources import MemorySource
from amygdala_daemon.sources.base import Snapshot, diff
from amygdala_daemon.store.checkpoint import save_checkpoint
from amygdala_daemon.store.generations import (
    current_manifest,
    generation_dir,
    generations,
    read_manifest,
    write_generation,
)
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.lock import StateLock
from amygdala_daemon.store.recovery import recover_fold, refold, stored_model_info

log = logging.getLogger(__name__)

# Texts per ledger transaction: a crash re-runs at most this much model work.
EXTRACT_CHUNK = 128


def model_settings(config: Config) -> dict[str, Any]:
    """The config keys that shape what the ledger stores: changing one needs a full rebuild.

    The model keys shape the activations; aliases are applied as tags are parsed.
    """
    model = config.model
    return {
        "model.name": model.name,
        "model.layers": model.layers,
        "model.pooling": model.pooling,
        "model.sink_norm_ratio": model.sink_norm_ratio,
        "model.max_tokens": model.max_tokens,
        "concepts.aliases": config.concepts.aliases,
    }


@dataclass
class SyncReport:
    """What one pass over the source did."""

    applied: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    ineligible: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changes: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.applied)} applied, {len(self.quarantined)} quarantined, "
            f"{len(self.ineligible)} ineligible, {len(self.deleted)} deleted"
        )


ProgressFactory = Callable[[int, str], Any]
EventCallback = Callable[[str, dict[str, Any]], None]


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
        self.state = config.state_path
        self.paths = StatePaths(self.state)
        self.progress = progress
        self.lock = StateLock(self.state).acquire()
        try:
            self.ledger = Ledger(self.paths.ledger)
            if not for_full_rebuild:
                self._check_model_settings()
            self.model_info = stored_model_info(self.ledger)
            self.fold: Accumulators | None = None
            if self.model_info is not None and not for_full_rebuild:
                self.fold = recover_fold(self.ledger, config, self.shape)
            self._extractor: Extractor | None = None
            self._loaded_info: ModelInfo
            self._checkpoint_seq = self.fold.ledger_seq if self.fold else 0
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

    def _check_model_settings(self) -> None:
        stored = self.ledger.get_meta("model_settings")
        wanted = model_settings(self.config)
        if stored is None or self.ledger.live_count() == 0:
            self.ledger.set_meta_committed("model_settings", json.dumps(wanted, sort_keys=True))
            return
        before = json.loads(stored)
        changed = sorted(key for key in wanted if before.get(key) != wanted[key])
        if changed:
            keys = ", ".join(changed)
            raise InputError(
                f"{keys} changed since the stored activations were made "
                f"({', '.join(f'{before.get(k)!r} -> {wanted[k]!r}' for k in changed)}); "
                "run `amygdala-daemon rebuild` to recompute them"
            )

    # -- model ------------------------------------------------------------------------

    @property
    def extractor(self) -> Extractor:
        """The model, loaded on first use; the ledger learns its layers and width."""
        if self._extractor is None:
            self._extractor, self._loaded_info = self._load_extractor()
        info = self._loaded_info
        if self.model_info is None or self.ledger.live_count() == 0:
            self.model_info = info
            self.ledger.set_meta_committed("model", info.to_json())
            self.fold = Accumulators(self.shape, self.config.labels, self.ledger.seq)
        elif asdict(self.model_info) != asdict(info):
            raise InputError(
                f"the model now loads as {info.model_id} layers {info.layers}, but the "
                f"ledger holds activations of {self.model_info.model_id} layers "
                f"{self.model_info.layers}; run `amygdala-daemon rebuild`"
            )
        return self._extractor

    def _load_extractor(self) -> tuple[Extractor, ModelInfo]:
        from amygdala_daemon.model.loading import load_model

        model = self.config.model
        if model.threads:
            import torch

            torch.set_num_threads(model.threads)
        loaded = load_model(model, self.state)
        extractor = Extractor(
            loaded.model,
            loaded.tokenizer,
            model.layers,
            pooling=model.pooling,
            sink_norm_ratio=model.sink_norm_ratio,
            max_tokens=model.max_tokens,
            batch_tokens=model.batch_tokens,
            batch_size=model.batch_size,
        )
        info = ModelInfo(
            model_id=loaded.model_id,
            revision=loaded.revision,
            layers=extractor.layers,
            hidden_size=extractor.hidden_size,
            n_layers=extractor.n_layers,
            pooling=model.pooling,
            sink_norm_ratio=model.sink_norm_ratio,
            max_tokens=model.max_tokens,
        )
        return extractor, info

    # -- ingestion --------------------------------------------------------------------

    def _apply(self, writes: list[Write]) -> list[Change]:
        changes = self.ledger.apply(writes)
        if changes:
            assert self.fold is not None, "entries exist, so the fold does"
            for change in changes:
                self.fold.apply(change, self.ledger)
        return changes

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
        for problem in snapshot.problems:
            log.warning("source problem: %s", problem)
        changes = diff(snapshot, self.ledger.known_hashes())
        notify = on_change or (lambda _event, _data: None)
        immediate: list[Write] = []
        for rejected in changes.rejected:
            immediate.append(
                SetStatus(rejected.id, rejected.fingerprint, "quarantined", rejected.reason)
            )
            report.quarantined.append((rejected.id, rejected.reason))
            notify("node_quarantined", {"id": rejected.id, "reason": rejected.reason})
        for node_id in changes.deletes:
            immediate.append(DeleteNode(node_id))
            report.deleted.append(node_id)
        to_extract = []
        for node in sorted(changes.upserts, key=lambda n: n.id):
            parsed = parse_text(node.text, self.config.concepts.aliases)
            reason = "" if parsed.tags else "no valid tag"
            if parsed.tags and not parsed.content:
                reason = "no content above the tag lines"
            if reason:
                immediate.append(
                    SetStatus(
                        node.id,
                        node.content_hash,
                        "ineligible",
                        reason,
                        node.kind,
                        node.updated_at,
                        len(parsed.malformed),
                    )
                )
                report.ineligible.append(node.id)
            else:
                to_extract.append((node, parsed))
        report.changes += len(self._apply(immediate))
        if not to_extract:
            return report
        extractor = self.extractor
        log.info("extracting %d new or changed nodes", len(to_extract))
        bar = self.progress(len(to_extract), "extracting") if self.progress else None
        try:
            for start in range(0, len(to_extract), EXTRACT_CHUNK):
                if should_stop is not None and should_stop():
                    break
                chunk = to_extract[start : start + EXTRACT_CHUNK]
                results = extractor.extract(
                    [parsed.content for _, parsed in chunk],
                    progress=bar.update if bar is not None else None,
                )
                writes: list[Write] = []
                for (node, parsed), result in zip(chunk, results, strict=True):
                    if result.activations is None:
                        reason = result.error or "no activations"
                        writes.append(
                            SetStatus(
                                node.id,
                                node.content_hash,
                                "quarantined",
                                reason,
                                node.kind,
                                node.updated_at,
                                len(parsed.malformed),
                            )
                        )
                        report.quarantined.append((node.id, reason))
                        notify("node_quarantined", {"id": node.id, "reason": reason})
                        continue
                    writes.append(
                        StoreEntry(
                            node.id,
                            node.content_hash,
                            node.kind,
                            node.updated_at,
                            parsed.tags,
                            parsed.content,
                            len(parsed.malformed),
                            result.activations,
                            result.n_tokens,
                            result.truncated,
                        )
                    )
                    report.applied.append(node.id)
                applied = self._apply(writes)
                report.changes += len(applied)
                for node, _ in chunk:
                    if node.id in report.applied:
                        notify("node_applied", {"id": node.id})
                notify("batch_committed", {"nodes": len(chunk), "ledger_seq": self.ledger.seq})
        finally:
            if bar is not None:
                bar.close()
        return report

    # -- checkpoint, publish, rebuild -------------------------------------------------

    def checkpoint(self) -> bool:
        """Save the fold if the ledger moved since the last save; drop what it now holds."""
        if self.fold is None or self.fold.ledger_seq == self._checkpoint_seq:
            return False
        previous = self._checkpoint_seq
        save_checkpoint(self.fold, self.paths.checkpoint)
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
        labels_changed = config.labels != self.config.labels
        self.config = config
        if labels_changed and self.model_info is not None:
            self.fold = refold(self.ledger, self.shape, config.labels)

    def _heal_registry(self) -> None:
        """Re-register rows a crash between writing a generation and registering it lost."""
        manifest = current_manifest(self.published)
        registry = self.ledger.registry()
        if manifest is None or manifest.get("registry_epoch") != self.ledger.get_meta(
            "registry_epoch"
        ):
            return
        concepts = list(manifest["concepts"])
        if concepts[: len(registry)] == registry and len(concepts) > len(registry):
            self.ledger.register(concepts[len(registry) :])

    def publish(self, force: bool = False) -> Path | None:
        """Write a new generation; None when nothing changed since the newest one.

        The newest generation, not `current`: after a rollback, nothing is republished
        until the ledger or the settings move.
        """
        if self.fold is None or self.model_info is None:
            raise AmygdalaError("nothing to publish yet: no node has been ingested")
        newest = max(generations(self.published), default=None)
        manifest = None if newest is None else read_manifest(generation_dir(self.published, newest))
        fingerprint = settings_fingerprint(self.config, self.model_info)
        unchanged = (
            manifest is not None
            and manifest.get("ledger_seq") == self.fold.ledger_seq
            and manifest.get("settings_fingerprint") == fingerprint
        )
        if unchanged and not force:
            return None
        self._heal_registry()
        generation = max(generations(self.published), default=0) + 1
        log.info("publishing generation %d (ledger seq %d)", generation, self.fold.ledger_seq)
        release = build_release(
            self.fold,
            self.ledger,
            self.config,
            self.model_info,
            self.published,
            generation,
            previous=manifest,
            force_evaluation=force,
        )
        publish = self.config.publish
        written = write_generation(
            release,
            self.published,
            self.config.vectors.dtype,
            publish.keep,
            publish.vectors_path,
            publish.manifest_path,
        )
        log.info("published %s", written)
        return written

    def _new_registry_epoch(self) -> None:
        epoch = int(self.ledger.get_meta("registry_epoch") or 0) + 1
        self.ledger.set_meta_committed("registry_epoch", str(epoch))

    def rebuild(self, source: MemorySource, from_cache: bool = False) -> SyncReport:
        """Recompute everything; `from_cache` refolds stored activations without the model."""
        if from_cache:
            if self.model_info is None:
                raise AmygdalaError("rebuild --from-cache: the ledger holds no activations yet")
            self.fold = refold(self.ledger, self.shape, self.config.labels)
            report = SyncReport()
        else:
            # Read the source and load the model before forgetting anything: bad input
            # fails here, with the old state intact.
            snapshot = source.snapshot()
            if self._extractor is None:
                self._extractor, self._loaded_info = self._load_extractor()
            self.ledger.reset()
            settings = json.dumps(model_settings(self.config), sort_keys=True)
            self.ledger.set_meta_committed("model_settings", settings)
            self.model_info, self.fold, self._checkpoint_seq = None, None, -1
            (self.paths.checkpoint).unlink(missing_ok=True)
            report = self.apply_snapshot(snapshot)
        self.ledger.reset_registry()
        self._new_registry_epoch()
        self._checkpoint_seq = -1
        self.checkpoint()
        if self.fold is not None:
            self.publish(force=True)
        return report
