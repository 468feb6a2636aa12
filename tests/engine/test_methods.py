"""The covariance-aware directions through the real ledger, fold, checkpoint and publisher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from amygdala_daemon.core.config import Config, Method
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import layer_key
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold
from tests.helpers.folds import assert_same_statistics
from tests.helpers.graphs import edited, make_config, sample_nodes, write_jsonl


def published_vectors(config: Config) -> tuple[list[str], dict[int, np.ndarray]]:
    readout = load_readout(StatePaths(config.state_path).current)
    return readout.concepts, {
        layer: rows.astype(np.float64) for layer, rows in readout.vectors.items()
    }


def ingest_in_steps(
    config: Config, graph: Path, nodes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Three syncs with edits, an untagging edit, deletes and a re-add; returns the final lines."""
    lines = nodes[:120]
    write_jsonl(graph, lines)
    engine = Engine(config)
    try:
        engine.sync(open_source(config.source))
        lines = lines + nodes[120:250]
        lines += [edited(nodes[i], "Later that week it changed.") for i in range(0, 40, 4)]
        lines += [{"id": nodes[1]["id"], "text": nodes[1]["text"].rpartition("\n")[0]}]
        lines += [{"id": nodes[i]["id"], "deleted": True} for i in range(50, 60)]
        write_jsonl(graph, lines)
        engine.sync(open_source(config.source))
        engine.checkpoint()
        lines += [*nodes[250:], nodes[55], edited(nodes[4], "And again.")]
        write_jsonl(graph, lines)
        engine.sync(open_source(config.source))
        engine.publish(force=True)
    finally:
        engine.close()
    final: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.get("deleted"):
            final.pop(line["id"], None)
        else:
            final[line["id"]] = line
    return list(final.values())


def recovered_fold(config: Config) -> Accumulators:
    ledger = Ledger(StatePaths(config.state_path).ledger, readonly=True)
    try:
        return recover_fold(ledger, config, (2, 64))
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("method", "vectors"),
    [
        ("shrinkage_lda", {}),
        ("score_ridge", {}),
        # Hidden 64 above the bound: the covariance comes from a sample of stored activations.
        ("shrinkage_lda", {"covariance_max_hidden": 32, "covariance_sample": 200}),
    ],
)
def test_incremental_equals_rebuild_for_the_covariance_methods(
    tmp_path: Path, tiny_model_dir: Path, method: Method, vectors: dict[str, Any]
) -> None:
    settings = {"method": method, **vectors}
    graph = tmp_path / "graph.jsonl"
    config = make_config(
        tmp_path / "inc", graph, tiny_model_dir, model={"batch_size": 1}, vectors=settings
    )
    final = ingest_in_steps(config, graph, sample_nodes())
    fresh_graph = write_jsonl(tmp_path / "final.jsonl", final)
    fresh_config = make_config(
        tmp_path / "fresh", fresh_graph, tiny_model_dir, model={"batch_size": 1}, vectors=settings
    )
    fresh = Engine(fresh_config)
    try:
        fresh.rebuild(open_source(fresh_config.source))
    finally:
        fresh.close()
    concepts, incremental = published_vectors(config)
    fresh_concepts, rebuilt = published_vectors(fresh_config)
    assert sorted(concepts) == sorted(fresh_concepts) and concepts
    rows = [fresh_concepts.index(name) for name in concepts]
    for layer, matrix in incremental.items():
        np.testing.assert_allclose(matrix, rebuilt[layer][rows], atol=1e-6)
    # The fold itself, checkpoint plus replay, against the rebuild's: within 1e-9.
    recovered, reference = (recovered_fold(c) for c in (config, fresh_config))
    assert (recovered.comoment is None) == bool(vectors)
    assert_same_statistics(recovered, reference)


def test_switching_to_a_covariance_method_refolds_from_the_cache(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:150])
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        assert engine.fold is not None and engine.fold.comoment is None
    finally:
        engine.close()
    switched = make_config(
        tmp_path / "s", graph, tiny_model_dir, vectors={"method": "shrinkage_lda"}
    )
    cached = Engine(switched)
    try:
        assert cached.fold is not None and cached.fold.comoment is not None
        cached.rebuild(open_source(switched.source), from_cache=True)
        assert not cached.model_loaded, "a method change needs no model"
    finally:
        cached.close()
    manifest = load_readout(StatePaths(switched.state_path).current).manifest
    assert manifest["method"] == "shrinkage_lda"
    tensors = load_file(str(StatePaths(switched.state_path).current / "vectors.safetensors"))
    for layer in manifest["layers"]:
        norms = np.linalg.norm(tensors[layer_key(layer)], axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
