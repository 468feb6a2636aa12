"""Kept activations in the write path: the fold stays the fold of the committed changes."""

from __future__ import annotations

from pathlib import Path

from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.recovery import refold
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import edited, make_config, sample_nodes, write_jsonl


def test_reused_activations_fold_like_a_fresh_ingest(tmp_path: Path, tiny_model_dir: Path) -> None:
    nodes = sample_nodes()[:90]
    graph = tmp_path / "graph.jsonl"
    config = make_config(tmp_path / "state", graph, tiny_model_dir, model={"batch_size": 1})
    write_jsonl(graph, nodes)
    engine = Engine(config)
    try:
        source = open_source(config.source)
        engine.sync(source)
        passes = engine.extraction_counters
        assert passes is not None
        first = passes.sequences
        # Half deleted (under the default fraction), a few edited; then all back as they were.
        write_jsonl(graph, nodes[:45] + [edited(n, "It rained.") for n in nodes[45:50]])
        shrunk = engine.sync(source)
        assert shrunk.held is None and len(shrunk.deleted) == 40
        edits = passes.sequences - first
        write_jsonl(graph, nodes)
        back = engine.sync(source)
        assert passes.sequences == first + edits  # nothing new reached the model
        assert len(back.reused) > 35 and not set(back.reused) - set(back.applied)
        assert engine.fold is not None and engine.model_info is not None
        # The fold equals the fold of what the ledger holds: kept rows are never counted.
        from_ledger = refold(engine.ledger, engine.shape, config.labels, covariance=False)
        assert_same_fold(engine.fold, from_ledger)
    finally:
        engine.close()

    # And equals an ingest of the same graph from scratch.
    fresh_config = make_config(tmp_path / "fresh", graph, tiny_model_dir, model={"batch_size": 1})
    fresh = Engine(fresh_config)
    try:
        fresh.sync(open_source(fresh_config.source))
        assert fresh.fold is not None
        assert_same_fold(from_ledger, fresh.fold, rtol=1e-6)
    finally:
        fresh.close()
