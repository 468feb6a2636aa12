"""Activations kept for node versions that left the ledger, so a return costs no forward pass.

A deleted node, or the old text of an edited one, leaves its pooled activations here, keyed
by the hash of the content the model read and by the model settings that made them. A node
whose content comes back (a graph file swapped back, an edit undone) takes them instead of
the model. Kept rows are never part of the fold: they only stand in for a forward pass.
The BLOB is copied from the entry as stored, so it keeps the ledger's activation encoding.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from amygdala_daemon.store.activation_codec import decode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kept_activations (
    content_hash TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    activations BLOB NOT NULL,
    n_layers INTEGER NOT NULL,
    hidden INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    truncated INTEGER NOT NULL,
    kept_seq INTEGER NOT NULL
)
"""


def content_hash(content: str) -> str:
    """What the model read, as a key: equal content gives equal activations."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeptActivation:
    """A forward pass's result, as stored when its entry left the ledger."""

    activations: npt.NDArray[np.float32]
    n_tokens: int
    truncated: bool


class KeptActivations:
    """The `kept_activations` table of a writer's ledger connection.

    `settings` names the model settings in force; rows made under others are dropped on
    open, so they can never stand in for this model's activations.
    """

    def __init__(self, conn: sqlite3.Connection, settings: str, dtype: str, limit: int) -> None:
        self.conn, self.settings, self.dtype, self.limit = conn, settings, dtype, limit
        with conn:
            conn.execute(_SCHEMA)
            conn.execute("DELETE FROM kept_activations WHERE settings != ?", (settings,))

    def _commit(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        # The ledger connection runs in autocommit mode: one explicit transaction here.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self.conn.execute(sql, params)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def keep(self, retracted: list[tuple[int, str, int]]) -> None:
        """Keep the activations of retracted entries: (entry id, content, retraction seq).

        Only the newest `limit` rows stay. Call it before the entries are forgotten.
        """
        if not retracted or self.limit == 0:
            return
        copy = (
            "INSERT OR REPLACE INTO kept_activations SELECT ?, ?, activations, n_layers, "
            "hidden, n_tokens, truncated, ? FROM entries WHERE entry_id = ?"
        )
        statements: list[tuple[str, tuple[object, ...]]] = [
            (copy, (content_hash(content), self.settings, seq, entry_id))
            for entry_id, content, seq in retracted
        ]
        prune = (
            "DELETE FROM kept_activations WHERE content_hash NOT IN (SELECT content_hash "
            "FROM kept_activations ORDER BY kept_seq DESC, content_hash LIMIT ?)"
        )
        statements.append((prune, (self.limit,)))
        self._commit(statements)

    def take(self, content: str) -> KeptActivation | None:
        """The kept result for this content, removed from the table (it is live again)."""
        key = content_hash(content)
        row = self.conn.execute(
            "SELECT activations, n_layers, hidden, n_tokens, truncated FROM kept_activations "
            "WHERE content_hash = ? AND settings = ?",
            (key, self.settings),
        ).fetchone()
        if row is None:
            return None
        blob, n_layers, hidden, n_tokens, truncated = row
        self._commit([("DELETE FROM kept_activations WHERE content_hash = ?", (key,))])
        activations = decode(blob, n_layers, hidden, self.dtype)
        return KeptActivation(activations, int(n_tokens), bool(truncated))

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM kept_activations").fetchone()[0])
