"""ledger.py: the source of truth, on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.changes import Change, DeleteNode, SetStatus, StoreEntry, Write
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.store.ledger import Ledger


def test_the_writers_known_hashes_stay_in_step_with_the_table(tmp_path: Path) -> None:
    """The in-memory map a poll diffs against equals a fresh read after every kind of write."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)

    def store(node_id: str, node_hash: str, activations: np.ndarray | None = None) -> StoreEntry:
        rows = np.ones((2, 4), np.float32) if activations is None else activations
        return StoreEntry(node_id, node_hash, None, None, {"joy": 9.0}, "x" * 50, 0, rows, 5, False)

    def table() -> dict[str, str]:
        reader = Ledger(path, readonly=True)
        try:
            return dict(reader.known_hashes())
        finally:
            reader.close()

    try:
        assert dict(ledger.known_hashes()) == {}
        steps: list[list[Write]] = [
            [store("a", "h1"), store("b", "h2"), SetStatus("c", "h3", "quarantined", "bad")],
            [store("a", "h4"), DeleteNode("b")],
            [SetStatus("b", "h5", "ineligible", "no valid tag"), DeleteNode("c")],
        ]
        for writes in steps:
            ledger.apply(writes)
            assert dict(ledger.known_hashes()) == table()
        assert dict(ledger.known_hashes()) == {"a": "h4", "b": "h5"}
        # A write that fails half-way rolls back, and the map with it.
        with pytest.raises(IndexError):
            ledger.apply([store("d", "h6"), store("a", "h7", np.zeros(3, np.float32))])
        assert dict(ledger.known_hashes()) == table() == {"a": "h4", "b": "h5"}
        ledger.reset()
        assert dict(ledger.known_hashes()) == table() == {}
    finally:
        ledger.close()


def stored(
    node_id: str,
    node_hash: str,
    content: str = "x" * 50,
    tags: dict[str, float] | None = None,
    activations: np.ndarray | None = None,
) -> StoreEntry:
    rows = np.arange(8, dtype=np.float32).reshape(2, 4) if activations is None else activations
    return StoreEntry(
        node_id, node_hash, "journal", "2026-01-02", tags or {"joy": 9.0}, content, 1, rows, 7, True
    )


def steps(changes: Iterable[Change]) -> list[tuple[int, int, str, str]]:
    """Changes as (seq, sign, node id, content): what the fold reads from them."""
    return [(c.seq, c.sign, c.entry.node_id, c.entry.content) for c in changes]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path / "ledger.sqlite3")
    yield opened
    opened.close()


def reader_of(ledger: Ledger) -> Ledger:
    return Ledger(ledger.path, readonly=True)


def test_every_applied_change_gets_the_next_sequence_number(ledger: Ledger) -> None:
    assert ledger.seq == 0 and ledger.get_meta("schema") == "1"
    activations = np.array([[0.1, -2.5, 3.0, 1e-8], [4.0, 5.0, -6.0, 7.0]], dtype=np.float64)
    changes = ledger.apply(
        [stored("a", "h1", "first a", activations=activations), stored("b", "h2")]
    )
    assert steps(changes) == [(1, 1, "a", "first a"), (2, 1, "b", "x" * 50)]
    assert ledger.seq == 2
    assert ledger.status_counts() == {"stored": 2}
    entries = {entry.node_id: entry for entry in ledger.live_entries()}
    assert entries["a"].tags == {"joy": 9.0}
    assert entries["a"].activations.dtype == np.float32
    np.testing.assert_array_equal(entries["a"].activations, activations.astype(np.float32))
    # A status-only write and a delete of an unknown node add no fold step.
    assert ledger.apply([SetStatus("c", "h3", "ineligible", "no valid tag")]) == []
    assert ledger.apply([DeleteNode("never-seen")]) == []
    assert ledger.seq == 2 and ledger.live_count() == 2
    assert ledger.status_counts() == {"stored": 2, "ineligible": 1}


def test_an_edit_retracts_the_old_entry_then_adds_the_new(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h1", "first a"), stored("b", "h2", "only b")])
    old_id = next(e.entry_id for e in ledger.live_entries() if e.node_id == "a")
    changes = ledger.apply([stored("a", "h3", "second a", tags={"calm": 8.0})])
    assert steps(changes) == [(3, -1, "a", "first a"), (4, 1, "a", "second a")]
    assert changes[0].entry.entry_id == old_id and changes[0].entry.tags == {"joy": 9.0}
    assert sorted((e.node_id, e.content) for e in ledger.live_entries()) == [
        ("a", "second a"),
        ("b", "only b"),
    ]
    assert steps(ledger.changes_since(2)) == steps(changes)
    assert steps(ledger.changes_since(0)) == [
        (1, 1, "a", "first a"),
        (2, 1, "b", "only b"),
        (3, -1, "a", "first a"),
        (4, 1, "a", "second a"),
    ]
    assert list(ledger.changes_since(4)) == []


def test_delete_and_quarantine_retract_what_the_node_contributed(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h1", "a text"), stored("b", "h2", "b text")])
    changes = ledger.apply([DeleteNode("a"), SetStatus("b", "h3", "quarantined", "non-finite")])
    assert steps(changes) == [(3, -1, "a", "a text"), (4, -1, "b", "b text")]
    assert ledger.live_count() == 0
    assert dict(ledger.known_hashes()) == {"b": "h3"}
    assert ledger.status_counts() == {"quarantined": 1}
    assert ledger.quarantined() == [("b", "non-finite")]
    # Coming back from quarantine is one add: nothing was live to retract.
    assert steps(ledger.apply([stored("b", "h4", "b again")])) == [(5, 1, "b", "b again")]


def test_a_failed_batch_leaves_no_trace(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h1", "first a")])
    broken = np.zeros(3, np.float32)  # one-dimensional: the insert cannot take it
    with pytest.raises(IndexError):
        ledger.apply(
            [stored("a", "h2", "second a"), DeleteNode("a"), stored("c", "h3", activations=broken)]
        )
    # The retraction that ran before the failure is undone with the rest.
    assert ledger.seq == 1
    assert [(e.node_id, e.content) for e in ledger.live_entries()] == [("a", "first a")]
    assert list(ledger.changes_since(1)) == []
    reader = reader_of(ledger)
    try:
        assert reader.seq == 1 and dict(reader.known_hashes()) == {"a": "h1"}
    finally:
        reader.close()
    assert steps(ledger.apply([stored("b", "h4", "b")])) == [(2, 1, "b", "b")]


def test_entries_live_at_a_change_and_mentioning_a_word(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h", "Joy came back.")])  # seq 1
    ledger.apply([stored("b", "h", "Nothing to see.")])  # seq 2
    ledger.apply([stored("c", "h", "JOY again, loudly.")])  # seq 3
    ledger.apply([stored("d", "h", "a quiet joy")])  # seq 4
    ledger.apply([DeleteNode("c")])  # seq 5

    def live_at(seq: int, word: str) -> list[str]:
        return [e.node_id for e in ledger.entries_live_at(seq, word)]

    assert live_at(4, "joy") == ["a", "c"], "added before 4, case-insensitive"
    assert live_at(6, "joy") == ["a", "d"], "c was removed at 5"
    assert live_at(1, "joy") == []
    assert live_at(6, "sorrow") == []


def test_like_wildcards_in_a_word_match_only_themselves(ledger: Ledger) -> None:
    ledger.apply(
        [
            stored("percent", "h", "It was 50% done."),
            stored("digit", "h", "It was 500 done."),
            stored("under", "h", "see snake_case here"),
            stored("other", "h", "see snakeXcase here"),
        ]
    )
    assert [e.node_id for e in ledger.entries_live_at(99, "50%")] == ["percent"]
    assert [e.node_id for e in ledger.entries_live_at(99, "snake_case")] == ["under"]


def test_the_registry_only_appends_until_renumbered(ledger: Ledger) -> None:
    assert ledger.registry() == []
    ledger.register(["joy", "calm"])
    ledger.register(["calm", "awe", "joy"])
    assert ledger.registry() == ["joy", "calm", "awe"]
    ledger.apply([stored("a", "h1")])
    ledger.reset()
    assert ledger.registry() == ["joy", "calm", "awe"], "reset keeps the row order"
    assert ledger.get_meta("registry_epoch") is None
    ledger.renumber_registry()
    assert ledger.registry() == [] and ledger.get_meta("registry_epoch") == "1"
    ledger.register(["awe", "joy"])
    assert ledger.registry() == ["awe", "joy"]
    ledger.renumber_registry()
    assert ledger.get_meta("registry_epoch") == "2"


def test_meta_is_committed_and_seen_by_a_reader(ledger: Ledger) -> None:
    assert ledger.get_meta("model") is None
    ledger.set_meta_committed("model", '{"name": "tiny"}')
    ledger.set_meta_committed("model", '{"name": "tiny", "rev": 2}')
    reader = reader_of(ledger)
    try:
        assert reader.get_meta("model") == '{"name": "tiny", "rev": 2}'
    finally:
        reader.close()


def test_a_reader_sees_committed_writes_and_cannot_write(ledger: Ledger) -> None:
    reader = reader_of(ledger)
    try:
        assert reader.seq == 0 and reader.live_count() == 0
        ledger.apply([stored("a", "h1"), stored("b", "h2")])
        assert reader.seq == 2 and reader.live_count() == 2
        assert dict(reader.known_hashes()) == {"a": "h1", "b": "h2"}
        ledger.apply([DeleteNode("b")])
        assert dict(reader.known_hashes()) == {"a": "h1"}, "a reader never serves a stale map"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.apply([stored("c", "h3")])
        assert ledger.seq == 3
    finally:
        reader.close()


def test_readonly_needs_an_existing_ledger_and_creates_none(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    with pytest.raises(AmygdalaError, match="nothing has been ingested yet") as refused:
        Ledger(path, readonly=True)
    assert str(path) in str(refused.value)
    assert not path.exists() and not path.parent.exists()


def test_reset_forgets_nodes_but_the_sequence_keeps_counting(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    try:
        ledger.apply([stored("a", "h1"), SetStatus("b", "h2", "ineligible", "short")])
        ledger.reset()
        assert ledger.live_count() == 0 and ledger.status_counts() == {}
        assert list(ledger.changes_since(0)) == []
        assert steps(ledger.apply([stored("a", "h1", "again")])) == [(2, 1, "a", "again")]
    finally:
        ledger.close()
    reopened = Ledger(path)
    try:
        assert reopened.seq == 2, "opening again keeps the sequence"
        assert [e.content for e in reopened.live_entries()] == ["again"]
    finally:
        reopened.close()


def test_forgetting_retracted_entries_keeps_the_live_ones(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h1", "a1"), stored("b", "h2", "b1")])  # 1, 2
    ledger.apply([stored("a", "h3", "a2")])  # 3 retracts a1, 4 adds a2
    ledger.apply([stored("b", "h4", "b2")])  # 5 retracts b1, 6 adds b2
    assert ledger.forget_retracted(4) == 1, "only a1 was retracted by 4"
    assert steps(ledger.changes_since(4)) == [(5, -1, "b", "b1"), (6, 1, "b", "b2")]
    assert ledger.forget_retracted(6) == 1
    assert sorted(e.content for e in ledger.live_entries()) == ["a2", "b2"]
    assert ledger.seq == 6


def ledger_files(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Size, mtime and bytes of the database and its WAL: any commit changes one of them.

    The -shm file is left out: readers update their marks in it through mmap.
    """
    files = [path, path.with_name(path.name + "-wal")]
    return {
        f.name: (f.stat().st_size, f.stat().st_mtime_ns, f.read_bytes())
        for f in files
        if f.exists()
    }


def test_applying_or_registering_nothing_new_writes_nothing(ledger: Ledger) -> None:
    ledger.apply([stored("a", "h1")])
    ledger.register(["joy", "calm"])
    before = ledger_files(ledger.path)
    for _ in range(3):
        assert ledger.apply([]) == []
        ledger.register(["calm", "joy"])
    assert ledger_files(ledger.path) == before
    assert ledger.seq == 1 and ledger.registry() == ["joy", "calm"]
    ledger.register(["calm", "awe"])
    assert ledger.registry() == ["joy", "calm", "awe"]
    assert ledger_files(ledger.path) != before


def test_an_idle_sync_writes_nothing_to_the_state_directory(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.sources import open_source
    from tests.helpers.graphs import make_config, sample_nodes, write_jsonl

    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:30])
    config = make_config(tmp_path / "state", graph, tiny_model_dir)
    source = open_source(config.source)
    engine = Engine(config)
    try:
        assert engine.sync(source).changes > 0
        engine.checkpoint()
        assert engine.publish() is not None
        before = ledger_files(engine.paths.ledger)
        listing = sorted(p.name for p in engine.paths.root.rglob("*"))
        for _ in range(5):
            assert engine.sync(source).changes == 0
            assert engine.checkpoint() is False
            assert engine.publish() is None
        assert ledger_files(engine.paths.ledger) == before
        assert sorted(p.name for p in engine.paths.root.rglob("*")) == listing
    finally:
        engine.close()
