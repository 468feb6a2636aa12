"""Kept activations in the write path: retracted entries leave theirs, returning content takes them.

A node that comes back with content seen before (a graph file swapped back, an edit undone)
is stored from the kept activations without a forward pass. The fold sees an ordinary entry:
only the model work is skipped, never a ledger change.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable

from amygdala_daemon.core.changes import Change, Write
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.tags import ParsedText
from amygdala_daemon.engine.ingest import EventCallback, SyncReport, entry_write
from amygdala_daemon.engine.settings import model_settings
from amygdala_daemon.model.extractor import Extraction
from amygdala_daemon.sources.base import SourceNode
from amygdala_daemon.store.kept import KeptActivations
from amygdala_daemon.store.ledger import Ledger

log = logging.getLogger(__name__)


def kept_store(ledger: Ledger, config: Config) -> KeptActivations:
    """The kept rows of this ledger that the current model settings may use."""
    settings = json.dumps(
        {**model_settings(config), "model": ledger.get_meta("model") or ""}, sort_keys=True
    )
    return KeptActivations(
        ledger.conn, settings, ledger.activation_dtype, config.source.keep_deleted
    )


def keep_retracted(ledger: Ledger, config: Config, changes: list[Change]) -> None:
    """Keep the activations of the entries these changes retracted."""
    retracted = [(c.entry.entry_id, c.entry.content, c.seq) for c in changes if c.sign < 0]
    if not retracted or config.source.keep_deleted == 0:
        return
    try:
        kept_store(ledger, config).keep(retracted)
    except sqlite3.Error as exc:
        # Only a later forward pass is lost: the ledger change itself is committed.
        log.warning("could not keep the activations of %d entries: %s", len(retracted), exc)


def reuse_kept(
    ledger: Ledger,
    config: Config,
    to_extract: list[tuple[SourceNode, ParsedText]],
    apply: Callable[[list[Write]], list[Change]],
    report: SyncReport,
    notify: EventCallback,
) -> list[tuple[SourceNode, ParsedText]]:
    """Store the nodes whose content has kept activations; return those that need the model."""
    if not to_extract or config.source.keep_deleted == 0:
        return to_extract
    kept = kept_store(ledger, config)
    writes: list[Write] = []
    reused: list[str] = []
    remaining: list[tuple[SourceNode, ParsedText]] = []
    for node, parsed in to_extract:
        found = kept.take(parsed.content)
        if found is None:
            remaining.append((node, parsed))
            continue
        extraction = Extraction(found.activations, found.n_tokens, found.truncated)
        writes.append(entry_write(node, parsed, extraction))
        reused.append(node.id)
    if writes:
        report.changes += len(apply(writes))
        report.applied += reused
        report.reused += reused
        log.info("stored %d nodes from kept activations, without the model", len(reused))
        for node_id in reused:
            notify("node_applied", {"id": node_id, "reused": True})
    return remaining
