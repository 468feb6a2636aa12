"""The published files: what vLLM reads must be complete, consistent and atomic."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.manifest import Release
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import ReadoutError, load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.generations import generations, rollback, write_generation
from tests.helpers.generations import check_generation
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl


def test_publish_layout_format_and_skip(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    flat_vectors = tmp_path / "vllm" / "readout.safetensors"
    flat_manifest = tmp_path / "vllm" / "readout.json"
    config = make_config(
        tmp_path / "s",
        graph_path,
        tiny_model_dir,
        publish={"vectors_path": str(flat_vectors), "manifest_path": str(flat_manifest), "keep": 2},
    )
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        published = config.state_path / "published"
        current = published / "current"
        assert current.is_symlink() and os.readlink(current) == "gen-000001"
        manifest = check_generation(current)
        assert len(manifest["concepts"]) == 14 and manifest["layers"] == [1, 2]
        assert manifest["ledger_seq"] == engine.ledger.seq
        for key in (
            "model_id",
            "model_revision",
            "hidden_size",
            "dtype",
            "layer_convention",
            "generation",
            "created_at",
            "counts",
            "calibration",
        ):
            assert key in manifest
        calibration = manifest["calibration"]["joy"]["2"]
        assert calibration["pos_mean"] > calibration["neg_mean"]
        assert calibration["pos_std"] > 0 and calibration["neg_std"] > 0
        for path in (current / "vectors.safetensors", current / "manifest.json", flat_vectors):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert flat_vectors.read_bytes() == (current / "vectors.safetensors").read_bytes()
        assert json.loads(flat_manifest.read_text()) == manifest
        old_inode = flat_vectors.stat().st_ino

        assert engine.publish() is None, "nothing changed: skipped"
        assert engine.publish(force=True) is not None
        assert flat_vectors.stat().st_ino != old_inode, "flat file replaced by rename"
        engine.publish(force=True)
        assert generations(published) == [2, 3], "keep = 2"
        assert not list(published.glob(".*"))
    finally:
        engine.close()


def test_rows_keep_their_index_across_generations(tmp_path: Path, tiny_model_dir: Path) -> None:
    nodes = sample_nodes()
    graph = tmp_path / "graph.jsonl"
    # Start without any confusion positives, so that concept arrives later.
    write_jsonl(graph, [n for n in nodes if "confusion:" not in n["text"]])
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        first = check_generation(config.state_path / "published/current")
        assert "confusion" not in first["concepts"]
        write_jsonl(graph, nodes)
        engine.sync(open_source(config.source))
        engine.publish()
        second = check_generation(config.state_path / "published/current")
        assert second["concepts"][: len(first["concepts"])] == first["concepts"]
        assert second["concepts"][-1] == "confusion"
    finally:
        engine.close()


def test_rollback(tmp_path: Path, graph_path: Path, tiny_model_dir: Path) -> None:
    config = make_config(tmp_path / "s", graph_path, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        engine.publish(force=True)
        engine.publish(force=True)
    finally:
        engine.close()
    published = config.state_path / "published"
    flat = tmp_path / "flat.safetensors"
    assert rollback(published, None, str(flat)) == 2
    assert flat.read_bytes() == (published / "gen-000002/vectors.safetensors").read_bytes()
    assert rollback(published, None) == 1
    engine = Engine(config)
    try:
        assert engine.publish() is None, "a rollback is not undone by the next scheduled publish"
    finally:
        engine.close()
    assert check_generation(published / "current")["generation"] == 1
    assert rollback(published, 3) == 3
    with pytest.raises(InputError, match=r"generation 9 does not exist \(kept: 1, 2, 3\)"):
        rollback(published, 9)


def test_a_generation_the_reader_rejects_never_becomes_current(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    flat_vectors, flat_manifest = tmp_path / "flat.safetensors", tmp_path / "flat.json"
    flat = {"vectors_path": str(flat_vectors), "manifest_path": str(flat_manifest)}
    config = make_config(tmp_path / "s", graph_path, tiny_model_dir, publish=flat)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
    finally:
        engine.close()
    published = config.state_path / "published"
    good = load_readout(published / "current")
    vectors = {layer: rows.astype(np.float64) for layer, rows in good.vectors.items()}
    vectors[good.layers[0]][0] = 0.0  # a row with no direction
    release = Release(vectors=vectors, manifest={**good.manifest, "generation": 2})
    before = flat_vectors.read_bytes(), flat_manifest.read_bytes()

    def verify(directory: Path) -> None:
        load_readout(directory, directory / "manifest.json")

    with pytest.raises(ReadoutError, match="not unit norm"):
        write_generation(release, published, "float32", 10, **flat, verify=verify)
    assert os.readlink(published / "current") == "gen-000001"
    assert generations(published) == [1], "no generation directory for what was refused"
    assert not list(published.glob(".*")), "nothing half written is left"
    assert (flat_vectors.read_bytes(), flat_manifest.read_bytes()) == before
    assert load_readout(flat_vectors, flat_manifest).generation == 1
