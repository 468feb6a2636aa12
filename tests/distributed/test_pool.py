"""A rebuild on a local Ray cluster equals the single-process one, even when a worker dies."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.ledger import Ledger
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import make_config

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[dev]')")

pytestmark = pytest.mark.slow

# Small chunks: the sample graph makes two dozen tasks, enough to kill a worker mid-rebuild.
DISTRIBUTED = {"engine": "ray", "workers": 2, "chunk_nodes": 16}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, namespace="amygdala-daemon")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def single_process(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[Config, Engine]:
    from tests.helpers.graphs import sample_nodes, write_jsonl

    work = tmp_path_factory.mktemp("single")
    graph = write_jsonl(work / "graph.jsonl", sample_nodes())
    config = make_config(work / "state", graph, tiny_model_dir)
    engine = Engine(config, for_full_rebuild=True)
    engine.rebuild(open_source(config.source))
    return config, engine


def ledger_rows(config: Config) -> tuple[dict[str, str], dict[str, int], list[Any]]:
    ledger = Ledger(StatePaths(config.state_path).ledger, readonly=True)
    try:
        hashes = dict(ledger.known_hashes())
        labels = sorted(
            (node, sorted(tags.items()), text) for node, tags, text in ledger.live_labels()
        )
        return hashes, ledger.status_counts(), labels
    finally:
        ledger.close()


def assert_same_rebuild(single: tuple[Config, Engine], config: Config, engine: Engine) -> None:
    single_config, single_engine = single
    assert ledger_rows(config) == ledger_rows(single_config)
    assert single_engine.fold is not None and engine.fold is not None
    assert_same_fold(engine.fold, single_engine.fold, rtol=1e-6)
    mine = load_readout(StatePaths(config.state_path).current)
    theirs = load_readout(StatePaths(single_config.state_path).current)
    assert mine.concepts == theirs.concepts and mine.concepts
    for layer, rows in theirs.vectors.items():
        np.testing.assert_allclose(mine.vectors[layer], rows, rtol=0, atol=1e-6)


def distributed_engine(tmp_path: Path, graph: Path, model: Path, progress: Any = None) -> Engine:
    config = make_config(tmp_path / "state", graph, model, distributed=DISTRIBUTED)
    return Engine(config, progress=progress, for_full_rebuild=True)


def test_two_workers_give_the_single_process_result(
    local_ray: None,
    single_process: tuple[Config, Engine],
    tmp_path: Path,
    graph_path: Path,
    tiny_model_dir: Path,
) -> None:
    engine = distributed_engine(tmp_path, graph_path, tiny_model_dir)
    try:
        report = engine.rebuild(open_source(engine.config.source))
        assert report.applied
        assert_same_rebuild(single_process, engine.config, engine)
    finally:
        engine.close()


class KillingBar:
    """A progress bar that kills a Ray worker when the first chunk comes back."""

    def __init__(self, victim: str) -> None:
        self.victim = victim
        self.done = 0
        self.killed = False

    def update(self, count: int) -> None:
        self.done += count
        if not self.killed:
            ray.kill(ray.get_actor(self.victim, namespace="amygdala-daemon"), no_restart=True)
            self.killed = True

    def close(self) -> None:
        pass


def test_a_worker_killed_mid_rebuild_has_its_chunks_retried(
    local_ray: None,
    single_process: tuple[Config, Engine],
    tmp_path: Path,
    graph_path: Path,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The second worker this process spawns: it holds two chunks in flight when killed.
    bar = KillingBar(f"amygdala-extract-{os.getpid()}-1")
    bars: list[KillingBar] = []

    def progress(total: int, label: str) -> KillingBar:
        bars.append(bar)
        return bar

    engine = distributed_engine(tmp_path, graph_path, tiny_model_dir, progress)
    try:
        with caplog.at_level(logging.INFO, logger="amygdala_daemon.distributed.pool"):
            report = engine.rebuild(open_source(engine.config.source))
        assert bar.killed
        assert "Ray worker 1 died" in caplog.text
        # One bar over all workers: each node counted once, the retried ones included.
        assert bar.done == len(report.applied) + len(report.quarantined) and bars == [bar]
        assert_same_rebuild(single_process, engine.config, engine)
    finally:
        engine.close()
