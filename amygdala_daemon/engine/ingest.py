"""Ingestion: a snapshot becomes ledger writes; each new or changed node meets the model once.

Nodes that need no forward pass (deleted, rejected by the source, untagged, empty) are written
at once. The rest are extracted in chunks, each committed in one transaction, so a crash
re-runs at most one chunk of model work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from amygdala_daemon.core.changes import Change, DeleteNode, SetStatus, StoreEntry, Write
from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.delete_guard import DeleteHold
from amygdala_daemon.core.labels import is_eligible
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.core.tags import ParsedText, parse_text
from amygdala_daemon.model.extractor import Extraction, Extractor
from amygdala_daemon.sources.base import Changes, SourceNode

log = logging.getLogger(__name__)

# Texts per ledger transaction: a crash re-runs at most this much model work.
EXTRACT_CHUNK = 128

ProgressFactory = Callable[[int, str], Any]
EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class SyncReport:
    """What one pass over the source did."""

    applied: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    ineligible: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changes: int = 0
    unfolded: set[str] = field(default_factory=set)
    """Stored, so a label change can use them, but in no statistic under the current labels
    (shorter than labels.min_content_chars): counted as ineligible, as `status` counts them."""
    reused: list[str] = field(default_factory=list)
    """Stored from kept activations, without a forward pass (also in `applied`)."""
    held: DeleteHold | None = None
    """Set when the sync was held back as a mass delete: nothing of it was applied."""

    def summary(self) -> str:
        applied = sum(node_id not in self.unfolded for node_id in self.applied)
        ineligible = len(self.ineligible) + len(self.applied) - applied
        held = f", {self.held.deletes} deletes held" if self.held is not None else ""
        return (
            f"{applied} applied, {len(self.quarantined)} quarantined, "
            f"{ineligible} ineligible, {len(self.deleted)} deleted, "
            f"{len(self.reused)} from kept activations{held}"
        )


@dataclass
class Plan:
    """A diff sorted into what is written now and what needs the model first."""

    immediate: list[Write] = field(default_factory=list)
    to_extract: list[tuple[SourceNode, ParsedText]] = field(default_factory=list)


@dataclass
class TrackedConcepts:
    """The concepts the fold tracks, and how many it may: new tags are checked against both."""

    names: set[str]
    limit: int
    labels: LabelsConfig

    def refusal(self, parsed: ParsedText) -> str:
        """Why a node may not add its new concepts, or "" when it may (and then they count)."""
        if not is_eligible(parsed.tags, parsed.content, self.labels):
            return ""
        new = set(parsed.tags) - self.names
        if new and len(self.names) + len(new) > self.limit:
            return (
                f"its tags would add {len(new)} concepts to the {len(self.names)} tracked "
                f"(concepts.max_tracked = {self.limit})"
            )
        self.names |= new
        return ""


def plan_writes(
    changes: Changes,
    aliases: dict[str, str],
    report: SyncReport,
    notify: EventCallback,
    tracked: TrackedConcepts | None = None,
) -> Plan:
    """Sort a diff: deletes, rejections and ineligible nodes now; the rest to the model."""
    plan = Plan()
    for rejected in changes.rejected:
        plan.immediate.append(
            SetStatus(rejected.id, rejected.fingerprint, "quarantined", rejected.reason)
        )
        report.quarantined.append((rejected.id, rejected.reason))
        notify("node_quarantined", {"id": rejected.id, "reason": rejected.reason})
    for node_id in changes.deletes:
        plan.immediate.append(DeleteNode(node_id))
        report.deleted.append(node_id)
    for node in sorted(changes.upserts, key=lambda n: n.id):
        parsed = parse_text(node.text, aliases)
        reason = "" if parsed.tags else "no valid tag"
        if parsed.tags and not parsed.content:
            reason = "no content above the tag lines"
        refused = "" if reason or tracked is None else tracked.refusal(parsed)
        if reason:
            plan.immediate.append(status_write(node, parsed, "ineligible", reason))
            report.ineligible.append(node.id)
        elif refused:
            plan.immediate.append(status_write(node, parsed, "quarantined", refused))
            report.quarantined.append((node.id, refused))
            notify("node_quarantined", {"id": node.id, "reason": refused})
        else:
            plan.to_extract.append((node, parsed))
            if tracked is not None and not is_eligible(parsed.tags, parsed.content, tracked.labels):
                report.unfolded.add(node.id)
    return plan


def status_write(node: SourceNode, parsed: ParsedText, status: str, reason: str) -> SetStatus:
    """The node exists but contributes nothing."""
    return SetStatus(
        node.id,
        node.content_hash,
        status,
        reason,
        node.kind,
        node.updated_at,
        len(parsed.malformed),
    )


def entry_write(node: SourceNode, parsed: ParsedText, result: Extraction) -> StoreEntry:
    """The node's pooled activations, with its tags and content, for the ledger."""
    assert result.activations is not None
    return StoreEntry(
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


class ChunkRunner(Protocol):
    """Extraction somewhere else (Ray workers): chunks in, each chunk's results out."""

    chunk_nodes: int
    model_info: ModelInfo

    def run(
        self, chunks: Sequence[list[str]], progress: Callable[[int], Any] | None
    ) -> Iterator[tuple[int, list[Extraction]]]:
        """(chunk index, its texts' extractions in input order) as each chunk finishes, in
        any order, each chunk exactly once; `progress` gets the texts finished."""
        ...


@dataclass
class Ingest:
    """Runs planned nodes through the model and hands the writes to `apply`, chunk by chunk."""

    apply: Callable[[list[Write]], list[Change]]
    """Commits writes to the ledger and folds the changes in; returns what was applied."""
    extractor: Callable[[], Extractor]
    """The model, loaded on first need."""
    ledger_seq: Callable[[], int]
    progress: ProgressFactory | None = None
    runner: Callable[[], ChunkRunner] | None = None
    """When set, the model runs there instead (the runner's model is adopted on the call)."""

    def extract(
        self,
        to_extract: list[tuple[SourceNode, ParsedText]],
        report: SyncReport,
        notify: EventCallback,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Extract in chunks that each commit in one transaction; stop between chunks."""
        if self.runner is not None:
            self._extract_elsewhere(self.runner(), to_extract, report, notify, should_stop)
            return
        extractor = self.extractor()
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
                self._commit(chunk, results, report, notify)
        finally:
            if bar is not None:
                bar.close()

    def _extract_elsewhere(
        self,
        runner: ChunkRunner,
        to_extract: list[tuple[SourceNode, ParsedText]],
        report: SyncReport,
        notify: EventCallback,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """`extract` on a runner: this process stays the one writer, committing each chunk
        as it comes back, whichever worker made it."""
        size = runner.chunk_nodes
        chunks = [to_extract[start : start + size] for start in range(0, len(to_extract), size)]
        log.info("extracting %d new or changed nodes in %d chunks", len(to_extract), len(chunks))
        bar = self.progress(len(to_extract), "extracting") if self.progress else None
        results = runner.run(
            [[parsed.content for _, parsed in chunk] for chunk in chunks],
            bar.update if bar is not None else None,
        )
        try:
            for index, extracted in results:
                self._commit(chunks[index], extracted, report, notify)
                if should_stop is not None and should_stop():
                    break
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the runner's work in flight
            if bar is not None:
                bar.close()

    def _commit(
        self,
        chunk: list[tuple[SourceNode, ParsedText]],
        results: list[Extraction],
        report: SyncReport,
        notify: EventCallback,
    ) -> None:
        writes: list[Write] = []
        applied: list[str] = []
        for (node, parsed), result in zip(chunk, results, strict=True):
            if result.activations is None:
                reason = result.error or "no activations"
                writes.append(status_write(node, parsed, "quarantined", reason))
                report.quarantined.append((node.id, reason))
                notify("node_quarantined", {"id": node.id, "reason": reason})
            else:
                writes.append(entry_write(node, parsed, result))
                applied.append(node.id)
        changes = self.apply(writes)
        report.applied += applied
        report.changes += len(changes)
        for node_id in applied:
            notify("node_applied", {"id": node_id})
        notify("batch_committed", {"nodes": len(chunk), "ledger_seq": self.ledger_seq()})
