"""The ledger: SQLite (WAL), the source of truth for every node and every applied change.

Each applied version of a node is an *entry* row holding its labels' inputs (tags, content)
and its pooled activations. Applying an entry stamps `added_seq`; retracting it stamps
`removed_seq`. Both come from one monotonically increasing sequence, so the statistics at any
sequence S are the fold of entries with `added_seq <= S` that were not removed by S.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import sqlite_utils

from amygdala_daemon.core.changes import Change, DeleteNode, Entry, StoreEntry, Write
from amygdala_daemon.core.errors import AmygdalaError

SCHEMA_VERSION = 1


_ENTRY_COLUMNS = "entry_id, node_id, tags, content, activations, n_layers, hidden"


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> Entry:
    entry_id, node_id, tags, content, blob, n_layers, hidden = row[:7]
    activations = np.frombuffer(blob, dtype=np.float32).reshape(n_layers, hidden)
    return Entry(entry_id, node_id, json.loads(tags), content, activations)


class Ledger:
    """A connection to the ledger database. Writers must hold the state lock."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        # The writer's {node id: hash}, kept in step by `apply` and `reset`, so a poll does
        # not read every node row again. A reader cannot keep one: the writer moves on.
        self._known: dict[str, str] | None = None
        self._keeps_known = not readonly
        if readonly:
            if not path.exists():
                raise AmygdalaError(f"no ledger at {path}: nothing has been ingested yet")
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a checkpoint stamped with seq S must never be ahead of the durable ledger.
            self.conn.execute("PRAGMA synchronous=FULL")
            self._create_schema()
        self.conn.isolation_level = None  # explicit BEGIN/COMMIT below

    def _create_schema(self) -> None:
        db = sqlite_utils.Database(self.conn)
        if "meta" not in db.table_names():
            db.table("meta").create({"key": str, "value": str}, pk="key")
            db.table("nodes").create(
                {
                    "id": str,
                    "hash": str,
                    "status": str,
                    "reason": str,
                    "kind": str,
                    "updated_at": str,
                    "malformed": int,
                    "seq": int,
                },
                pk="id",
            )
            db.table("entries").create(
                {
                    "entry_id": int,
                    "node_id": str,
                    "tags": str,
                    "content": str,
                    "activations": bytes,
                    "n_layers": int,
                    "hidden": int,
                    "n_tokens": int,
                    "truncated": int,
                    "added_seq": int,
                    "removed_seq": int,
                },
                pk="entry_id",
            )
            db.table("entries").create_index(["added_seq"])
            db.table("entries").create_index(["removed_seq"])
            self.conn.execute(
                "CREATE UNIQUE INDEX entries_live ON entries(node_id) WHERE removed_seq IS NULL"
            )
            db.table("registry").create({"concept": str, "row": int}, pk="concept")
            self.conn.execute(
                "INSERT INTO meta VALUES ('schema', ?), ('seq', '0')", (str(SCHEMA_VERSION),)
            )
            self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def seq(self) -> int:
        return int(self.get_meta("seq") or 0)

    # -- reads ------------------------------------------------------------------------

    def known_hashes(self) -> Mapping[str, str]:
        """Every node's hash, `{node id: hash}`: a read-only view, current until the next
        `apply` (use it before writing, or copy it)."""
        if self._known is None:
            known = dict(self.conn.execute("SELECT id, hash FROM nodes").fetchall())
            if not self._keeps_known:
                return known
            self._known = known
        return MappingProxyType(self._known)

    def status_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, count(*) FROM nodes GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    def quarantined(self, limit: int = 50) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT id, reason FROM nodes WHERE status = 'quarantined' ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(str(node_id), str(reason)) for node_id, reason in rows]

    def live_entries(self) -> Iterator[Entry]:
        query = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE removed_seq IS NULL ORDER BY entry_id"
        for row in self.conn.execute(query):
            yield _entry(row)

    def live_count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM entries WHERE removed_seq IS NULL")
        return int(row.fetchone()[0])

    def live_labels(self) -> Iterator[tuple[str, dict[str, float], str]]:
        """Node id, tags and content of live entries, without their activations."""
        for node_id, tags, content in self.conn.execute(
            "SELECT node_id, tags, content FROM entries WHERE removed_seq IS NULL"
        ):
            yield node_id, json.loads(tags), content

    def changes_since(self, seq: int) -> Iterator[Change]:
        """Every add and retraction after `seq`, in sequence order."""
        query = f"""
            SELECT added_seq AS seq, 1, {_ENTRY_COLUMNS} FROM entries WHERE added_seq > :s
            UNION ALL
            SELECT removed_seq AS seq, -1, {_ENTRY_COLUMNS} FROM entries WHERE removed_seq > :s
            ORDER BY seq
        """
        for row in self.conn.execute(query, {"s": seq}):
            yield Change(int(row[0]), int(row[1]), _entry(row[2:]))

    def entries_live_at(self, seq: int, containing: str) -> Iterator[Entry]:
        """Entries live just before `seq` whose content contains `containing` (any case).

        A cheap pre-filter for mention checks: SQLite's LIKE is case-insensitive for ASCII.
        """
        pattern = "%" + containing.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = f"""
            SELECT {_ENTRY_COLUMNS} FROM entries
            WHERE added_seq < :s AND (removed_seq IS NULL OR removed_seq > :s)
              AND content LIKE :p ESCAPE '\\'
            ORDER BY entry_id
        """
        for row in self.conn.execute(query, {"s": seq, "p": pattern + "%"}):
            yield _entry(row)

    def sample_live_entries(self, node_ids: list[str]) -> Iterator[Entry]:
        for start in range(0, len(node_ids), 500):
            chunk = node_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT {_ENTRY_COLUMNS} FROM entries "
                f"WHERE removed_seq IS NULL AND node_id IN ({marks})"
            )
            for row in self.conn.execute(query, chunk):
                yield _entry(row)

    # -- writes -----------------------------------------------------------------------

    def apply(self, writes: list[Write]) -> list[Change]:
        """Apply writes in one transaction; return the fold steps they caused, in order."""
        changes: list[Change] = []
        hashes: dict[str, str | None] = {}
        seq = self.seq
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                live = self.conn.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM entries "
                    "WHERE node_id = ? AND removed_seq IS NULL",
                    (write.node_id,),
                ).fetchone()
                if live is not None:
                    seq += 1
                    self.conn.execute(
                        "UPDATE entries SET removed_seq = ? WHERE entry_id = ?", (seq, live[0])
                    )
                    changes.append(Change(seq, -1, _entry(live)))
                if isinstance(write, DeleteNode):
                    self.conn.execute("DELETE FROM nodes WHERE id = ?", (write.node_id,))
                    hashes[write.node_id] = None
                    continue
                if isinstance(write, StoreEntry):
                    seq += 1
                    changes.append(Change(seq, 1, self._insert_entry(write, seq)))
                    status, reason = "stored", ""
                else:
                    status, reason = write.status, write.reason
                self.conn.execute(
                    "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        write.node_id,
                        write.hash,
                        status,
                        reason,
                        write.kind,
                        write.updated_at,
                        write.malformed,
                        seq,
                    ),
                )
                hashes[write.node_id] = write.hash
            self.set_meta("seq", str(seq))
            self.conn.execute("COMMIT")
        except BaseException:
            self._known = None  # whatever was written is undone: read it again when asked
            self.conn.execute("ROLLBACK")
            raise
        if self._known is not None:
            for node_id, node_hash in hashes.items():
                if node_hash is None:
                    self._known.pop(node_id, None)
                else:
                    self._known[node_id] = node_hash
        return changes

    def _insert_entry(self, write: StoreEntry, seq: int) -> Entry:
        activations = np.ascontiguousarray(write.activations, dtype=np.float32)
        tags = json.dumps(write.tags, sort_keys=True)
        cursor = self.conn.execute(
            "INSERT INTO entries (node_id, tags, content, activations, n_layers, hidden, "
            "n_tokens, truncated, added_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                write.node_id,
                tags,
                write.content,
                activations.tobytes(),
                activations.shape[0],
                activations.shape[1],
                write.n_tokens,
                int(write.truncated),
                seq,
            ),
        )
        entry_id = int(cursor.lastrowid or 0)
        return Entry(entry_id, write.node_id, dict(write.tags), write.content, activations)

    def forget_retracted(self, upto_seq: int) -> int:
        """Drop entries retracted at or before `upto_seq` (a checkpoint already holds them)."""
        cursor = self.conn.execute("DELETE FROM entries WHERE removed_seq <= ?", (upto_seq,))
        return int(cursor.rowcount)

    def reset(self) -> None:
        """Forget every node and entry (for `rebuild`); the sequence keeps counting up."""
        self._known = None
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM entries")
        self.conn.execute("DELETE FROM nodes")
        self.conn.execute("COMMIT")

    def renumber_registry(self) -> None:
        """Forget row assignments and start a new registry epoch, in one transaction.

        Only `rebuild` may renumber concepts; consumers see the new epoch in the manifest.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM registry")
            epoch = int(self.get_meta("registry_epoch") or 0) + 1
            self.set_meta("registry_epoch", str(epoch))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- concept registry (row order of published tensors) ----------------------------

    def registry(self) -> list[str]:
        rows = self.conn.execute("SELECT concept FROM registry ORDER BY row")
        return [str(concept) for (concept,) in rows]

    def register(self, concepts: list[str]) -> None:
        """Append concepts to the registry; existing ones keep their row."""
        self.conn.execute("BEGIN IMMEDIATE")
        row = int(self.conn.execute("SELECT coalesce(max(row) + 1, 0) FROM registry").fetchone()[0])
        for concept in concepts:
            self.conn.execute("INSERT OR IGNORE INTO registry VALUES (?, ?)", (concept, row))
            row += 1
        self.conn.execute("COMMIT")

    def set_meta_committed(self, key: str, value: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.set_meta(key, value)
        self.conn.execute("COMMIT")
