"""Kept activations: copied from retracted entries as stored, bounded, and bound to settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.changes import DeleteNode, StoreEntry
from amygdala_daemon.store.activation_codec import decode, encode
from amygdala_daemon.store.kept import KeptActivations
from amygdala_daemon.store.ledger import Ledger


def entry(node_id: str, content: str, seed: int) -> StoreEntry:
    rows = np.random.default_rng(seed).standard_normal((2, 8)).astype(np.float32)
    return StoreEntry(node_id, f"h-{node_id}", None, None, {"joy": 9.0}, content, 0, rows, 7, True)


def retract(ledger: Ledger, node_ids: list[str]) -> list[tuple[int, str, int]]:
    """Delete nodes; (entry id, content, seq) of what each delete retracted."""
    changes = ledger.apply([DeleteNode(node_id) for node_id in node_ids])
    return [(c.entry.entry_id, c.entry.content, c.seq) for c in changes if c.sign < 0]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_kept_row_returns_the_stored_activations_once(tmp_path: Path, dtype: str) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.set_meta_committed("activation_dtype", dtype)
    written = entry("a", "the lake was calm", 1)
    ledger.apply([written])
    kept = KeptActivations(ledger.conn, "settings-1", dtype, limit=10)
    kept.keep(retract(ledger, ["a"]))
    assert kept.take("some other text") is None
    found = kept.take("the lake was calm")
    assert found is not None and found.n_tokens == 7 and found.truncated
    # Exactly what the ledger stored, rounding included: a refold would see the same values.
    stored = decode(encode(written.activations, dtype), 2, 8, dtype)
    np.testing.assert_array_equal(found.activations, stored)
    assert kept.take("the lake was calm") is None  # taken: it is live again
    ledger.close()


def test_only_the_newest_rows_stay(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.apply([entry(f"n{i}", f"text number {i}", i) for i in range(5)])
    kept = KeptActivations(ledger.conn, "s", "float32", limit=3)
    for i in range(5):
        kept.keep(retract(ledger, [f"n{i}"]))
    assert kept.count() == 3
    assert [kept.take(f"text number {i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    none = KeptActivations(ledger.conn, "s", "float32", limit=0)
    ledger.apply([entry("x", "kept nowhere", 9)])
    none.keep(retract(ledger, ["x"]))
    assert none.count() == 0
    ledger.close()


def test_rows_of_other_settings_are_dropped(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.apply([entry("a", "made by the old layers", 1)])
    KeptActivations(ledger.conn, "layers [1, 2]", "float32", 10).keep(retract(ledger, ["a"]))
    other = KeptActivations(ledger.conn, "layers [1]", "float32", 10)
    assert other.count() == 0 and other.take("made by the old layers") is None
    ledger.close()
