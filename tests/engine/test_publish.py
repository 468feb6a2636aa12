"""publish.py: every generation it makes is one the project's own reader loads."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import ReadoutWatcher, load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.generations import rollback
from tests.helpers.cli import one_error_line
from tests.helpers.cli import run_cli as cli
from tests.helpers.graphs import config_toml, make_config, sample_nodes, write_jsonl

# Seven nodes score confusion >= 8; without them the concept has no positives left.
CONCEPT = "confusion"


def without(nodes: list[dict[str, Any]], concept: str) -> list[dict[str, Any]]:
    return [node for node in nodes if f"{concept}:" not in node["text"]]


def row_of(directory: Path, concept: str) -> dict[int, np.ndarray]:
    """The concept's row at every layer, as a consumer loads it."""
    readout = load_readout(directory)
    row = readout.concepts.index(concept)
    return {layer: rows[row] for layer, rows in readout.vectors.items()}


def assert_same_rows(left: dict[int, np.ndarray], right: dict[int, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for layer in left:
        np.testing.assert_allclose(left[layer], right[layer], rtol=0, atol=1e-6)


def fresh_watcher_loads(current: Path) -> ReadoutWatcher:
    watcher = ReadoutWatcher(current)
    assert watcher.current is not None, watcher.last_error
    return watcher


# Five CLI subprocesses, each loading torch and the tiny model.
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_stale_concept_after_a_rollback_keeps_its_last_vector(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    graph = write_jsonl(tmp_path / "graph.jsonl", without(nodes, CONCEPT))
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            {
                "state_dir": str(state),
                "source": {"kind": "jsonl", "path": str(graph)},
                "model": {"name": str(tiny_model_dir), "layers": [1, 2], "threads": 1},
            }
        )
    )
    current = state / "published" / "current"
    assert cli(config, "rebuild").returncode == 0
    assert CONCEPT not in load_readout(current).concepts
    write_jsonl(graph, nodes)
    assert cli(config, "run", "--once").returncode == 0
    assert load_readout(current).generation == 2
    last = row_of(current, CONCEPT)
    back = cli(config, "rollback")
    assert back.returncode == 0 and "generation 1" in back.stdout, back.stderr
    # The concept loses every positive while `current` is a generation without its row.
    write_jsonl(graph, without(nodes, CONCEPT))
    again = cli(config, "run", "--once")
    assert again.returncode == 0, again.stderr

    watcher = fresh_watcher_loads(current)
    assert watcher.current is not None and watcher.current.generation == 3
    assert CONCEPT in watcher.current.manifest["stale"]
    assert_same_rows(row_of(current, CONCEPT), last)


def test_a_stale_concept_keeps_its_vector_when_its_generations_are_deleted(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    published = config.state_path / "published"
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        last = row_of(published / "current", CONCEPT)
        row = load_readout(published / "current").concepts.index(CONCEPT)
        # Every generation directory is gone: only the ledger remembers the vectors.
        shutil.rmtree(published)
        write_jsonl(graph, without(nodes, CONCEPT))
        engine.sync(open_source(config.source))
        assert engine.publish() is not None
    finally:
        engine.close()
    watcher = fresh_watcher_loads(published / "current")
    assert watcher.current is not None
    assert watcher.current.concepts.index(CONCEPT) == row, "the row keeps its index"
    assert_same_rows(row_of(published / "current", CONCEPT), last)


def test_a_ledger_that_kept_no_vectors_finds_the_row_in_any_kept_generation(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    graph = write_jsonl(tmp_path / "graph.jsonl", without(nodes, CONCEPT))
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    published = config.state_path / "published"
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        write_jsonl(graph, nodes)
        engine.sync(open_source(config.source))
        engine.publish()
        last = row_of(published / "current", CONCEPT)
        engine.publish(force=True)
        assert rollback(published, 1) == 1
        # Only generations 2 and 3 hold the row; the registry holds no vector (an older ledger).
        engine.ledger.conn.execute("UPDATE registry SET vector = NULL")
        write_jsonl(graph, without(nodes, CONCEPT))
        engine.sync(open_source(config.source))
        assert engine.publish() is not None
    finally:
        engine.close()
    watcher = fresh_watcher_loads(published / "current")
    assert watcher.current is not None and watcher.current.generation == 4
    assert_same_rows(row_of(published / "current", CONCEPT), last)


@pytest.mark.slow
def test_a_row_with_no_vector_anywhere_is_refused_and_current_stays(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    graph = write_jsonl(tmp_path / "graph.jsonl", without(nodes, CONCEPT))
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    published = config.state_path / "published"
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        write_jsonl(graph, nodes)
        engine.sync(open_source(config.source))
        assert engine.publish() is not None
    finally:
        engine.close()
    assert rollback(published, 1) == 1
    before = (published / "current" / "vectors.safetensors").read_bytes()
    # A ledger that never kept vectors, and no generation left that holds the row.
    shutil.rmtree(published / "gen-000002")
    with sqlite3.connect(config.state_path / "ledger.sqlite3") as db:
        db.execute("UPDATE registry SET vector = NULL")
    write_jsonl(graph, without(nodes, CONCEPT))
    table = {
        "state_dir": str(config.state_path),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(tiny_model_dir), "layers": [1, 2], "threads": 1},
    }
    toml = tmp_path / "config.toml"
    toml.write_text(config_toml(table))
    refused = cli(toml, "run", "--once")
    assert refused.returncode == 1, refused.stderr
    line = one_error_line(refused)
    assert f"'{CONCEPT}'" in line and "rebuild" in line
    assert (published / "current" / "vectors.safetensors").read_bytes() == before
    assert os.readlink(published / "current") == "gen-000001"
    assert not list(published.glob(".*.partial"))
    fresh_watcher_loads(published / "current")


def tear_flat_copies(published: Path, flat_manifest: Path) -> None:
    """What a SIGKILL between the two renames leaves: new vectors, the previous manifest."""
    flat_manifest.write_bytes((published / "gen-000001" / "manifest.json").read_bytes())


def test_flat_copies_left_apart_are_repaired_by_the_next_publish(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    flat_vectors, flat_manifest = tmp_path / "vllm/readout.safetensors", tmp_path / "vllm/m.json"
    config = make_config(
        tmp_path / "s",
        graph_path,
        tiny_model_dir,
        publish={"vectors_path": str(flat_vectors), "manifest_path": str(flat_manifest)},
    )
    published = config.state_path / "published"
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        engine.publish(force=True)
    finally:
        engine.close()
    tear_flat_copies(published, flat_manifest)
    assert ReadoutWatcher(flat_vectors, flat_manifest).current is None, "torn: nothing loads"

    engine = Engine(config)
    try:
        assert engine.publish() is None, "nothing changed: no new generation"
    finally:
        engine.close()
    watcher = ReadoutWatcher(flat_vectors, flat_manifest)
    assert watcher.current is not None and watcher.current.generation == 2
    assert flat_manifest.read_bytes() == (published / "current/manifest.json").read_bytes()
