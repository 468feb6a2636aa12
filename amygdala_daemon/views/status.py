"""Read-only views of a state directory: no writer lock, so they work while the daemon runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.delete_guard import check_deletes
from amygdala_daemon.core.manifest import Manifest
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.sources import open_source
from amygdala_daemon.sources.base import diff
from amygdala_daemon.sources.errors import SourceError
from amygdala_daemon.store.generations import current_manifest
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.lock import lock_holder
from amygdala_daemon.store.recovery import recover_fold, stored_model_info


@dataclass(frozen=True)
class SourceState:
    """What a running daemon already knows of its source, so status need not read it again."""

    description: str
    backlog: int | None
    error: str | None
    held: dict[str, Any] | None = None
    """The mass-delete hold on the last sync (`DeleteHold.to_json`), if any."""


def status_report(config: Config, source_state: SourceState | None = None) -> dict[str, Any]:
    """The `status --json` object (DESIGN.md "Machine-readable contracts").

    Without `source_state` the source is read once to count the backlog.
    """
    state = config.state_path
    manifest = current_manifest(StatePaths(state).published)
    report: dict[str, Any] = {
        "state_dir": str(state),
        "generation": None if manifest is None else manifest["generation"],
        "ledger_seq": 0,
        "backlog": 0,
        "nodes": {"applied": 0, "quarantined": 0, "ineligible": 0},
        "concepts": [],
        "quarantined": [],
        "writer_pid": lock_holder(state),
        "source": None,
        "source_error": None,
        "warnings": [],
        "held": None,
    }
    ledger_path = StatePaths(state).ledger
    known: Mapping[str, str] = {}
    if ledger_path.exists():
        fields, known = _ledger_fields(ledger_path, config, manifest)
        report.update(fields)
        report["warnings"] = _warnings(config, report)
    report.update(_source_fields(config, known, source_state))
    return report


def _warnings(config: Config, report: dict[str, Any]) -> list[str]:
    """Settings that quietly do nothing: an included concept that no node carries."""
    if not report["nodes"]["applied"]:
        return []  # nothing ingested yet: no node carries anything
    carried = {concept["name"] for concept in report["concepts"]}
    return [
        f"concepts.include names {name!r}, but no node carries it"
        for name in config.concepts.include
        if name not in carried
    ]


def _ledger_fields(
    ledger_path: Path, config: Config, manifest: Manifest | None
) -> tuple[dict[str, Any], Mapping[str, str]]:
    """The ledger's part of the report, and the hashes it holds (to count the backlog)."""
    ledger = Ledger(ledger_path, readonly=True)
    try:
        # One read transaction: the checkpoint replay and the counts see one ledger state.
        ledger.conn.execute("BEGIN")
        known = ledger.known_hashes()
        statuses = ledger.status_counts()
        fields: dict[str, Any] = {
            "ledger_seq": ledger.seq,
            "quarantined": [
                {"id": node_id, "reason": reason} for node_id, reason in ledger.quarantined()
            ],
        }
        applied, fields["concepts"] = _fold_counts(ledger, config, manifest)
        stored = statuses.get("stored", 0)
        fields["nodes"] = {
            "applied": applied,
            "quarantined": statuses.get("quarantined", 0),
            "ineligible": statuses.get("ineligible", 0) + stored - applied,
        }
        ledger.conn.execute("COMMIT")
    finally:
        ledger.close()
    return fields, known


def _fold_counts(
    ledger: Ledger, config: Config, manifest: Manifest | None
) -> tuple[int, list[dict[str, Any]]]:
    """Nodes in the fold, and each concept's counts, most positives first."""
    info = stored_model_info(ledger)
    if info is None:
        return 0, []
    fold = recover_fold(ledger, config, (len(info.layers), info.hidden_size))
    published = set(manifest["concepts"]) if manifest else set()
    concepts = [
        {
            "name": c.name,
            "n_pos": c.n_pos,
            "n_neg": c.n_neg,
            "published": c.name in published,
        }
        for c in sorted(fold.counts(), key=lambda c: (-c.n_pos, c.name))
    ]
    return fold.total.count, concepts


def _source_fields(
    config: Config, known: Mapping[str, str], source_state: SourceState | None
) -> dict[str, Any]:
    """Source, backlog and source error: from the daemon when it gives them, else one read."""
    if source_state is not None:
        return {
            "source": source_state.description,
            "backlog": source_state.backlog,
            "source_error": source_state.error,
            "held": source_state.held,
        }
    fields: dict[str, Any] = {}
    try:
        source = open_source(config.source)
        fields["source"] = source.describe()
        snapshot = source.snapshot()
        changes = diff(snapshot, known)
        fields["backlog"] = len(changes)
        # What the writer's next sync would hold back (see `core.delete_guard`).
        empty = not (snapshot.nodes or snapshot.rejected or snapshot.pending)
        upserts = len(changes.upserts) + len(changes.rejected)
        fraction = config.source.max_delete_fraction
        hold = check_deletes(changes.deletes, len(known), upserts, fraction, empty)
        fields["held"] = hold.to_json() if hold is not None else None
    except SourceError as exc:
        fields["source_error"] = str(exc)
        fields["backlog"] = None
    return fields


def format_status(report: dict[str, Any]) -> str:
    """The human-readable status."""
    nodes = report["nodes"]
    lines = [
        f"state dir:   {report['state_dir']}"
        + (f" (writer pid {report['writer_pid']})" if report["writer_pid"] else ""),
        f"source:      {report['source'] or '?'}"
        + (f"  (error: {report['source_error']})" if report["source_error"] else ""),
        f"generation:  {report['generation'] if report['generation'] is not None else 'none yet'}",
        f"ledger seq:  {report['ledger_seq']}",
        f"backlog:     {report['backlog'] if report['backlog'] is not None else 'unknown'}",
        f"nodes:       {nodes['applied']} applied, {nodes['ineligible']} ineligible, "
        f"{nodes['quarantined']} quarantined",
    ]
    if report["concepts"]:
        lines.append("")
        lines.append(f"{'concept':<20} {'n_pos':>6} {'n_neg':>6}  published")
        for concept in report["concepts"]:
            mark = "yes" if concept["published"] else "-"
            lines.append(
                f"{concept['name']:<20} {concept['n_pos']:>6} {concept['n_neg']:>6}  {mark}"
            )
    if report["held"]:
        held = report["held"]
        lines.append("")
        lines.append(
            f"held:        mass delete of {held['deletes']} of {held['live']} nodes, "
            "nothing applied"
        )
        lines.append(f"             {held['confirm']}")
    if report["warnings"]:
        lines.append("")
        lines.extend(f"warning: {warning}" for warning in report["warnings"])
    if report["quarantined"]:
        lines.append("")
        lines.append("quarantined:")
        lines.extend(f"  {q['id']}: {q['reason']}" for q in report["quarantined"])
    return "\n".join(lines)
