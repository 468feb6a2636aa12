"""Ingestion, the ledger invariant and recovery, on the tiny model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import Config, LabelsConfig
from amygdala_daemon.core.errors import InputError, LockedError
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.checkpoint import load_checkpoint
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold, refold
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import edited, make_config, sample_nodes, write_jsonl


def test_incremental_with_edits_and_deletes_equals_rebuild(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    graph = tmp_path / "graph.jsonl"
    # batch_size 1: a float32 forward pass varies by ~1e-7 with batch composition; the
    # invariant under test is the ledger and the fold, so each text runs alone.
    config = make_config(tmp_path / "inc", graph, tiny_model_dir, model={"batch_size": 1})
    lines = nodes[:120]
    write_jsonl(graph, lines)
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        # Second increment: more nodes, edits (one drops its tags), deletes.
        lines = lines + nodes[120:250]
        lines += [edited(nodes[i], "Later that week it changed.") for i in range(0, 40, 4)]
        lines += [{"id": nodes[1]["id"], "text": nodes[1]["text"].rpartition("\n")[0]}]
        lines += [{"id": nodes[i]["id"], "deleted": True} for i in range(50, 60)]
        write_jsonl(graph, lines)
        report = engine.sync(open_source(config.source))
        assert len(report.deleted) == 10 and report.applied
        engine.checkpoint()
        # Third increment: the rest, a re-added node, another edit of an edited node.
        lines += [*nodes[250:], nodes[55], edited(nodes[4], "And again.")]
        write_jsonl(graph, lines)
        engine.sync(open_source(config.source))
        incremental = engine.fold
        assert incremental is not None
    finally:
        engine.close()

    final: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.get("deleted"):
            final.pop(line["id"], None)
        else:
            final[line["id"]] = line
    fresh_graph = write_jsonl(tmp_path / "final.jsonl", list(final.values()))
    fresh_config = make_config(
        tmp_path / "fresh", fresh_graph, tiny_model_dir, model={"batch_size": 1}
    )
    fresh = Engine(fresh_config)
    try:
        fresh.rebuild(open_source(fresh_config.source))
        assert fresh.fold is not None
        assert_same_fold(incremental, fresh.fold)
    finally:
        fresh.close()

    # Recovery: checkpoint plus replay equals the live fold, with no model loaded.
    ledger = Ledger(config.state_path / "ledger.sqlite3", readonly=True)
    try:
        recovered = recover_fold(ledger, config, incremental.shape)
        assert recovered.ledger_seq == incremental.ledger_seq
        assert_same_fold(incremental, recovered, rtol=1e-12)
    finally:
        ledger.close()


def test_rebuild_from_cache_after_threshold_change(tmp_path: Path, tiny_model_dir: Path) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes())
    config = make_config(tmp_path / "a", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
    finally:
        engine.close()
    stricter = {"min_positive_score": 9.0, "max_negative_score": 2.0, "max_negative_mentions": 1}
    changed = make_config(tmp_path / "a", graph, tiny_model_dir, labels=stricter)
    cached = Engine(changed)
    try:
        cached.rebuild(open_source(changed.source), from_cache=True)
        assert not cached.model_loaded, "--from-cache must not load the model"
        from_cache = cached.fold
        manifest = json.loads((changed.state_path / "published/current/manifest.json").read_text())
        assert manifest["generation"] == 2
    finally:
        cached.close()
    full_config = make_config(tmp_path / "b", graph, tiny_model_dir, labels=stricter)
    full = Engine(full_config)
    try:
        full.rebuild(open_source(full_config.source))
        assert from_cache is not None and full.fold is not None
        assert_same_fold(from_cache, full.fold)
    finally:
        full.close()


def test_nodes_already_applied_never_reach_the_model_again(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:60]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        first = engine.sync(open_source(config.source))
        sequences = engine.load_model().counters.sequences
        assert sequences == len(first.applied)
        assert engine.sync(open_source(config.source)).changes == 0
        assert engine.load_model().counters.sequences == sequences
        write_jsonl(graph, [*nodes, edited(nodes[3], "Edited.")])
        engine.sync(open_source(config.source))
        assert engine.load_model().counters.sequences == sequences + 1
    finally:
        engine.close()


def test_second_writer_is_refused_with_the_holders_pid(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    import os

    config = make_config(tmp_path / "s", graph_path, tiny_model_dir)
    engine = Engine(config)
    try:
        with pytest.raises(
            LockedError, match=rf"in use by another amygdala-daemon writer \(pid {os.getpid()}\)"
        ):
            Engine(config)
    finally:
        engine.close()
    Engine(config).close()


def test_model_settings_change_requires_rebuild(tmp_path: Path, tiny_model_dir: Path) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:30])
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
    finally:
        engine.close()
    moved = make_config(tmp_path / "s", graph, tiny_model_dir, model={"layers": [0, 3]})
    with pytest.raises(InputError, match=r"model.layers changed .*run `amygdala-daemon rebuild`"):
        Engine(moved)


def test_checkpoint_is_atomic_and_rejected_under_other_settings(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:80])
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        assert engine.checkpoint() and not engine.checkpoint()
        assert engine.fold is not None
        path = StatePaths(config.state_path).checkpoint
        loaded = load_checkpoint(path, config.labels, engine.fold.shape)
        assert loaded is not None and loaded.ledger_seq == engine.fold.ledger_seq
        assert_same_fold(engine.fold, loaded, rtol=0)
        assert load_checkpoint(path, LabelsConfig(min_positive_score=9), engine.fold.shape) is None
        assert not list(config.state_path.glob("*.tmp*"))
        assert not list(config.state_path.glob(".*.tmp*"))
        path.write_bytes(b"garbage")
        assert load_checkpoint(path, config.labels, engine.fold.shape) is None
        assert_same_fold(engine.fold, refold(engine.ledger, engine.fold.shape, config.labels))
    finally:
        engine.close()


def test_quarantine_and_ineligible_are_recorded(tmp_path: Path, tiny_model_dir: Path) -> None:
    nodes: list[dict[str, Any]] = [
        {"id": "ok", "text": "A long enough entry about the release going smoothly today.\njoy:9"},
        {"id": "short", "text": "Tiny.\njoy:9"},
        {"id": "untagged", "text": "A long enough entry that nobody has scored yet at all."},
        {"id": "bad-text", "text": 42},
    ]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config: Config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        report = engine.sync(open_source(config.source))
        assert report.applied == ["ok", "short"]  # stored: eligibility is decided in the fold
        assert report.ineligible == ["untagged"]
        assert report.quarantined == [("bad-text", "'text' must be a string, got int")]
        assert engine.fold is not None and engine.fold.total.count == 1
        assert engine.ledger.quarantined() == [("bad-text", "'text' must be a string, got int")]
    finally:
        engine.close()
    # Lowering min_content_chars is a refold on open (the checkpoint's settings differ),
    # not a model run.
    relaxed = replace(config, labels=LabelsConfig(min_content_chars=3))
    engine = Engine(relaxed)
    try:
        assert engine.fold is not None and engine.fold.total.count == 2
        assert not engine.model_loaded
    finally:
        engine.close()


def test_aliases_fold_into_their_concept_and_a_change_needs_rebuild(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = [
        {
            "id": f"n{i}",
            "text": f"Long enough content number {i} about an evening together.\n"
            + ("love:9" if i % 2 else "warmth:9"),
        }
        for i in range(12)
    ] + [
        {"id": f"m{i}", "text": f"Other long enough content {i} about the weather today.\ncalm:8"}
        for i in range(8)
    ]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = make_config(
        tmp_path / "s", graph, tiny_model_dir, concepts={"aliases": {"love": "warmth"}}
    )
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        assert engine.fold is not None
        counts = {c.name: c.n_pos for c in engine.fold.counts()}
        assert counts == {"warmth": 12, "calm": 8}
    finally:
        engine.close()
    plain = make_config(tmp_path / "s", graph, tiny_model_dir)
    with pytest.raises(
        InputError, match=r"concepts.aliases changed .*run `amygdala-daemon rebuild`"
    ):
        Engine(plain)
