"""The ledger's tables, and the one-time changes that bring an older ledger up to date."""

from __future__ import annotations

import sqlite3
import uuid

import sqlite_utils

SCHEMA_VERSION = 1


def new_ledger_id() -> str:
    """A ledger's identity: new for every new or reset ledger (see `Ledger.ledger_id`)."""
    return uuid.uuid4().hex


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables of a new ledger, or bring an older one up to date."""
    db = sqlite_utils.Database(conn)
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
        conn.execute(
            "CREATE UNIQUE INDEX entries_live ON entries(node_id) WHERE removed_seq IS NULL"
        )
        db.table("registry").create({"concept": str, "row": int}, pk="concept")
        conn.execute(
            "INSERT INTO meta VALUES ('schema', ?), ('seq', '0'), ('ledger_id', ?)",
            (str(SCHEMA_VERSION), new_ledger_id()),
        )
        conn.commit()
    elif conn.execute("SELECT 1 FROM meta WHERE key = 'ledger_id'").fetchone() is None:
        # A ledger made before ledgers had an identity: no checkpoint carries it yet.
        conn.execute("INSERT INTO meta VALUES ('ledger_id', ?)", (new_ledger_id(),))
        conn.commit()
    registry_columns = {row[1] for row in conn.execute("PRAGMA table_info(registry)")}
    if "vector" not in registry_columns:
        # Each row's last published vector (see `keep_vectors`); older ledgers lack it.
        conn.execute("ALTER TABLE registry ADD COLUMN vector BLOB")
        conn.commit()
