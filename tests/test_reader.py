"""The consumer side: load_readout, ReadoutWatcher, hot reload under a publishing daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.manifest import Manifest, Release
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import ReadoutError, ReadoutWatcher, load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.generations import serialize
from tests.helpers import ROOT, TESTS
from tests.helpers.daemon import DaemonProcess, next_event, request, wait_for
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl


@pytest.fixture
def published(tmp_path: Path, tiny_model_dir: Path) -> Path:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes())
    config = make_config(tmp_path / "state", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        engine.publish(force=True)
    finally:
        engine.close()
    return config.state_path / "published"


def replace_file(target: Path, data: bytes) -> None:
    temp = target.with_name(target.name + ".tmp")
    temp.write_bytes(data)
    os.replace(temp, target)


def test_load_readout_checks_everything(published: Path) -> None:
    readout = load_readout(published / "current")
    manifest = json.loads((published / "current/manifest.json").read_text())
    assert readout.concepts == manifest["concepts"] and readout.generation == 2
    assert readout.layers == [1, 2] and readout.vectors[1].shape == (14, 64)
    assert load_readout(published / "gen-000001" / "vectors.safetensors").generation == 1
    with pytest.raises(ReadoutError, match="generation 1, the vectors are generation 2"):
        load_readout(published / "current", published / "gen-000001/manifest.json")


def test_corrupt_new_file_keeps_the_last_good_generation(published: Path, tmp_path: Path) -> None:
    flat = tmp_path / "readout.safetensors"
    good = (published / "gen-000001/vectors.safetensors").read_bytes()
    replace_file(flat, good)
    watcher = ReadoutWatcher(flat)
    assert watcher.current is not None and watcher.current.generation == 1

    replace_file(flat, (published / "gen-000002/vectors.safetensors").read_bytes()[:-100])
    polled = watcher.poll()
    assert polled is not None and polled.generation == 1
    assert watcher.last_error is not None and "do not load" in watcher.last_error

    manifest: Manifest = json.loads((published / "gen-000002/manifest.json").read_text())
    readout = load_readout(published / "gen-000002")
    lying = Release(
        vectors={layer: rows.astype(np.float64) for layer, rows in readout.vectors.items()},
        manifest={**manifest, "concepts": [*manifest["concepts"], "extra"]},
    )
    replace_file(flat, serialize(lying, "float32")[0])
    polled = watcher.poll()
    assert polled is not None and polled.generation == 1
    assert "has shape [14, 64], the manifest says [15, 64]" in (watcher.last_error or "")

    replace_file(flat, (published / "gen-000002/vectors.safetensors").read_bytes())
    polled = watcher.poll()
    assert polled is not None and polled.generation == 2
    assert watcher.last_error is None


# A publishing daemon and two reader processes: about 45 s here.
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_hammer_reader_never_sees_a_torn_or_mismatched_generation(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    flat_vectors, flat_manifest = (
        tmp_path / "vllm/readout.safetensors",
        tmp_path / "vllm/readout.json",
    )
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        nodes,
        concepts={"min_positive": 1, "min_negative": 1, "max_concepts": 300},
        daemon={"poll_interval": 0.02},
        publish={
            "publish_after_s": 0.01,
            "keep": 3,
            "vectors_path": str(flat_vectors),
            "manifest_path": str(flat_manifest),
        },
    )
    daemon.start()
    readers = []
    try:
        client = daemon.client()
        wait_for(daemon.generation, what="the first generation")
        stop = tmp_path / "stop"
        for name, args in {
            "current": [str(daemon.state / "published/current/vectors.safetensors")],
            "flat": [str(flat_vectors), str(flat_manifest)],
        }.items():
            result = tmp_path / f"reader-{name}.json"
            readers.append(
                (
                    result,
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(TESTS / "helpers" / "reader_loop.py"),
                            args[0],
                            str(stop),
                            str(result),
                            *args[1:],
                        ],
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                        stdin=subprocess.DEVNULL,
                    ),
                )
            )
        first = daemon.generation()
        assert first is not None
        # Each new tag is a new concept: the concept list grows with every generation.
        for i in range(200):
            text = f"Entry {i}: a distinct long enough note for the hammer test.\nnovel{i:03d}:9"
            with daemon.graph.open("a") as handle:
                handle.write(json.dumps({"id": f"hammer-{i}", "text": text}) + "\n")
            next_event(client, "published")
        final = daemon.generation()
        # At least 200 generations went by (two quick appends may share one publish).
        assert final is not None and final >= 200
        stop.touch()
        for result, process in readers:
            assert process.wait(timeout=60) == 0
            outcome = json.loads(result.read_text())
            assert outcome["n_problems"] == 0, outcome["problems"]
            assert outcome["generations"][-1] == final
            assert len(outcome["final_concepts"]) == 14 + 200
            assert len(outcome["generations"]) > 20, "the reader saw many generations go by"
        status = request(client, {"op": "status"})["status"]
        assert status["generation"] == final
        assert daemon.stop() == 0
    finally:
        for _, process in readers:
            process.kill()
            process.wait()
        daemon.kill()
