"""The ledger: SQLite (WAL), the source of truth for every node and every applied change.

Each applied version of a node is an *entry* row holding its labels' inputs (tags, content)
and its pooled activations. Applying an entry stamps `added_seq`; retracting it stamps
`removed_seq`. Both come from one monotonically increasing sequence, so the statistics at any
sequence S are the fold of entries with `added_seq <= S` that were not removed by S.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.changes import Change, DeleteNode, Entry, StoreEntry, Write
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.store.activation_codec import decode, encode
from amygdala_daemon.store.errors import sqlite_damaged_error, sqlite_write_error
from amygdala_daemon.store.ledger_schema import create_schema, new_ledger_id

_ENTRY_COLUMNS = "entry_id, node_id, tags, content, activations, n_layers, hidden"


def _entry(row: sqlite3.Row | tuple[Any, ...], dtype: str = "float32") -> Entry:
    entry_id, node_id, tags, content, blob, n_layers, hidden = row[:7]
    activations = decode(blob, n_layers, hidden, dtype)
    return Entry(entry_id, node_id, json.loads(tags), content, activations)


def remove_database(path: Path) -> None:
    """Delete a SQLite database that nothing else uses, with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class Ledger:
    """A connection to the ledger database. Writers must hold the state lock."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        # The writer's {node id: hash}, kept in step by `apply` and `reset`, so a poll does
        # not read every node row again. A reader cannot keep one: the writer moves on.
        self._known: dict[str, str] | None = None
        self._dtype: str | None = None
        self.readonly = readonly
        self._keeps_known = not readonly
        if readonly and not path.exists():
            raise AmygdalaError(f"no ledger at {path}: nothing has been ingested yet")
        try:
            self.conn = self._connect()
        except sqlite3.Error as exc:
            damaged = sqlite_damaged_error(exc, path)
            if damaged is not None:
                raise damaged from None
            failed = sqlite_write_error(exc, path, "opening")
            if failed is None:
                raise
            # Even a reader of a WAL database needs room for its -wal and -shm files.
            raise failed.kept("its directory must be writable and not full") from None
        self.conn.isolation_level = None  # explicit BEGIN/COMMIT below

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            try:
                conn.execute("PRAGMA schema_version").fetchone()  # opens the -wal and -shm now
                return conn
            except sqlite3.OperationalError:
                conn.close()
                wal = self.path.with_name(self.path.name + "-wal")
                if wal.exists() or os.access(self.path.parent, os.W_OK):
                    raise
            # A read-only directory and no -wal: no writer has the ledger open, and none can
            # write through this mount, so the file cannot change while it is read.
            return sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a checkpoint stamped with seq S must never be ahead of the durable ledger.
        conn.execute("PRAGMA synchronous=FULL")
        create_schema(conn)
        return conn

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: committed whole, or rolled back whole."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            # A full disk may already have rolled it back: SQLite does so for SQLITE_FULL.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            # A reader that tries to write is a bug, not a disk problem: left as it is.
            failed = None
            if isinstance(exc, sqlite3.Error) and not self.readonly:
                failed = sqlite_write_error(exc, self.path)
            if failed is not None:
                raise failed.kept("the ledger is unchanged") from None
            raise

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def seq(self) -> int:
        return int(self.get_meta("seq") or 0)

    @property
    def ledger_id(self) -> str:
        """Which history the sequence numbers count: new for every new or reset ledger.

        Sequence numbers restart with a new ledger, so `ledger_seq` alone cannot tell a
        checkpoint of this ledger from one of a ledger that was deleted or reset.
        """
        return self.get_meta("ledger_id") or ""

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
            yield _entry(row, self.activation_dtype)

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
            yield Change(int(row[0]), int(row[1]), _entry(row[2:], self.activation_dtype))

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
            yield _entry(row, self.activation_dtype)

    def sample_live_entries(self, node_ids: list[str]) -> Iterator[Entry]:
        for start in range(0, len(node_ids), 500):
            chunk = node_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT {_ENTRY_COLUMNS} FROM entries "
                f"WHERE removed_seq IS NULL AND node_id IN ({marks})"
            )
            for row in self.conn.execute(query, chunk):
                yield _entry(row, self.activation_dtype)

    # -- writes -----------------------------------------------------------------------

    def apply(self, writes: list[Write]) -> list[Change]:
        """Apply writes in one transaction; return the fold steps they caused, in order.

        No writes, no transaction: an idle poll leaves the files alone (a full disk included).
        """
        if not writes:
            return []
        changes: list[Change] = []
        hashes: dict[str, str | None] = {}
        try:
            with self._transaction():
                seq = self.seq
                for write in writes:
                    seq = self._apply_write(write, seq, changes)
                    hashes[write.node_id] = None if isinstance(write, DeleteNode) else write.hash
                self.set_meta("seq", str(seq))
        except BaseException:
            self._known = None  # whatever was written is undone: read it again when asked
            raise
        if self._known is not None:
            for node_id, node_hash in hashes.items():
                if node_hash is None:
                    self._known.pop(node_id, None)
                else:
                    self._known[node_id] = node_hash
        return changes

    def _apply_write(self, write: Write, seq: int, changes: list[Change]) -> int:
        """Retract the node's live entry, then delete, store or mark it; the sequence after."""
        live = self.conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE node_id = ? AND removed_seq IS NULL",
            (write.node_id,),
        ).fetchone()
        if live is not None:
            seq += 1
            self.conn.execute(
                "UPDATE entries SET removed_seq = ? WHERE entry_id = ?", (seq, live[0])
            )
            changes.append(Change(seq, -1, _entry(live, self.activation_dtype)))
        if isinstance(write, DeleteNode):
            self.conn.execute("DELETE FROM nodes WHERE id = ?", (write.node_id,))
            return seq
        if isinstance(write, StoreEntry):
            seq += 1
            changes.append(Change(seq, 1, self._insert_entry(write, seq)))
            status, reason = "stored", ""
        else:
            status, reason = write.status, write.reason
        node = (write.node_id, write.hash, status, reason, write.kind, write.updated_at)
        self.conn.execute(
            "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*node, write.malformed, seq),
        )
        return seq

    def _insert_entry(self, write: StoreEntry, seq: int) -> Entry:
        dtype = self.activation_dtype
        activations = np.ascontiguousarray(write.activations, dtype=np.float32)
        blob = encode(activations, dtype)
        if dtype != "float32":  # the fold gets the rounded values a refold will read
            activations = decode(blob, activations.shape[0], activations.shape[1], dtype)
        tags = json.dumps(write.tags, sort_keys=True)
        cursor = self.conn.execute(
            "INSERT INTO entries (node_id, tags, content, activations, n_layers, hidden, "
            "n_tokens, truncated, added_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                write.node_id,
                tags,
                write.content,
                blob,
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
        with self._transaction():
            cursor = self.conn.execute("DELETE FROM entries WHERE removed_seq <= ?", (upto_seq,))
        return int(cursor.rowcount)

    def reset(self) -> None:
        """Forget every node and entry (for `rebuild`); the sequence keeps counting up.

        The ledger gets a new identity in the same transaction: a checkpoint of what was
        forgotten must never be replayed onto what comes next, even if `rebuild` is killed
        before it removes that checkpoint.
        """
        self._known = None
        with self._transaction():
            self.conn.execute("DELETE FROM entries")
            self.conn.execute("DELETE FROM nodes")
            self.set_meta("ledger_id", new_ledger_id())

    def replace_with(self, staged: Ledger) -> None:
        """Make this ledger's content that of `staged`, in one transaction.

        SQLite's backup API copies every page of `staged` into this database as one write:
        a reader sees the old ledger or the new one, and a crash mid-copy leaves the old one
        whole. The database files are never renamed, so no reader's WAL is orphaned.
        """
        self._known = self._dtype = None
        try:
            staged.conn.backup(self.conn)
        except sqlite3.Error as exc:
            failed = sqlite_write_error(exc, self.path)
            if failed is not None:
                raise failed.kept("the ledger is unchanged") from None
            raise

    def renumber_registry(self) -> None:
        """Forget row assignments and start a new registry epoch, in one transaction.

        Only `rebuild` may renumber concepts; consumers see the new epoch in the manifest.
        """
        with self._transaction():
            self.conn.execute("DELETE FROM registry")
            epoch = int(self.get_meta("registry_epoch") or 0) + 1
            self.set_meta("registry_epoch", str(epoch))

    # -- concept registry (row order of published tensors) ----------------------------

    def registry(self) -> list[str]:
        rows = self.conn.execute("SELECT concept FROM registry ORDER BY row")
        return [str(concept) for (concept,) in rows]

    def register(self, concepts: list[str]) -> None:
        """Append concepts to the registry; existing ones keep their row.

        Nothing new, no transaction: every publish registers its rows.
        """
        registered = set(self.registry())
        if all(concept in registered for concept in concepts):
            return
        with self._transaction():
            query = "SELECT coalesce(max(row) + 1, 0) FROM registry"
            row = int(self.conn.execute(query).fetchone()[0])
            for concept in concepts:
                self.conn.execute(
                    "INSERT OR IGNORE INTO registry (concept, row) VALUES (?, ?)", (concept, row)
                )
                row += 1

    def keep_vectors(self, vectors: Mapping[str, npt.NDArray[np.float64]]) -> None:
        """Store each registered concept's vector as just published, `[n_layers, hidden]`.

        A concept that loses all its data keeps its row and its last vector; kept here, that
        vector survives the generation directories being pruned or deleted.
        """
        with self._transaction():
            for concept, vector in vectors.items():
                blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
                self.conn.execute(
                    "UPDATE registry SET vector = ? WHERE concept = ?", (blob, concept)
                )

    def kept_concepts(self) -> set[str]:
        """Concepts whose last published vector `keep_vectors` has stored."""
        rows = self.conn.execute("SELECT concept FROM registry WHERE vector IS NOT NULL")
        return {str(concept) for (concept,) in rows}

    def kept_vectors(self, shape: tuple[int, int]) -> dict[str, npt.NDArray[np.float64]]:
        """The vectors `keep_vectors` stored, for concepts whose vector has this shape."""
        rows = self.conn.execute("SELECT concept, vector FROM registry WHERE vector IS NOT NULL")
        size = shape[0] * shape[1] * np.dtype(np.float32).itemsize
        return {
            str(concept): np.frombuffer(blob, dtype=np.float32).reshape(shape).astype(np.float64)
            for concept, blob in rows
            if len(blob) == size
        }

    @property
    def activation_dtype(self) -> str:
        """How activation BLOBs are stored (`activation_codec`); float32 in older ledgers."""
        if self._dtype is None:
            self._dtype = self.get_meta("activation_dtype") or "float32"
        return self._dtype

    def set_meta_committed(self, key: str, value: str) -> None:
        with self._transaction():
            self.set_meta(key, value)
        self._dtype = None  # read again: the key may be `activation_dtype`
