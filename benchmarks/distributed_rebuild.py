"""Distributed rebuild: 1 and 2 Ray workers against the single-process rebuild, in one run.

Every rebuild runs the same graph (the bundled sample, repeated under new ids) through the
same model (SmolLM2-135M by default) from an empty state directory. Reported per run: wall
time of the whole rebuild, the part before the workers were ready (Ray actors loading the
model), nodes per second of extraction, and each worker's throughput from the log. The ratios
are against the single-process rebuild and against 1 worker.

    .venv/bin/python benchmarks/distributed_rebuild.py --workers 1 2 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_WORK,
    bundled_nodes,
    link_model_cache,
    set_threads,
    smollm2_cache,
    write_result,
)


class Marks(logging.Handler):
    """Times of the log lines that split a rebuild into its phases, and per-worker lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ready = 0.0
        self.workers: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("rebuild on "):
            self.ready = time.perf_counter()
        elif message.startswith("Ray worker "):
            self.workers.append(message)


def write_graph(path: Path, repeat: int) -> int:
    nodes = bundled_nodes()
    lines = []
    for round_ in range(repeat):
        for node in nodes:
            lines.append(json.dumps({**node, "id": f"{node['id']}-r{round_}"}) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def run_one(work: Path, cache: Path, graph: Path, workers: int, chunk: int) -> dict[str, Any]:
    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.sources import open_source

    name = f"workers-{workers}" if workers else "single-process"
    state = work / name
    shutil.rmtree(state, ignore_errors=True)
    link_model_cache(state, cache)
    table: dict[str, Any] = {
        "state_dir": str(state),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"device": "cpu", "threads": 1},
    }
    if workers:
        table["distributed"] = {"engine": "ray", "workers": workers, "chunk_nodes": chunk}
    config = from_dict(table)
    marks = Marks()
    logging.getLogger("amygdala_daemon").addHandler(marks)
    start = time.perf_counter()
    engine = Engine(config, for_full_rebuild=True)
    try:
        report = engine.rebuild(open_source(config.source))
    finally:
        engine.close()
        logging.getLogger("amygdala_daemon").removeHandler(marks)
    wall = time.perf_counter() - start
    startup = (marks.ready - start) if marks.ready else 0.0
    extracted = len(report.applied) + len(report.quarantined)
    return {
        "mode": name,
        "workers": workers,
        "nodes": extracted,
        "wall_s": wall,
        "startup_s": startup,
        "extract_nodes_per_s": extracted / (wall - startup),
        "worker_log": marks.workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="bundled graph copies")
    parser.add_argument("--chunk-nodes", type=int, default=32)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "distributed")
    args = parser.parse_args()
    set_threads(1)  # one torch thread per process: the driver and each worker
    import ray

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("amygdala_daemon").setLevel(logging.INFO)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = smollm2_cache(args.work)
    graph = args.work / "graph.jsonl"
    total = write_graph(graph, args.repeat)
    ray.init(num_cpus=max(args.workers), include_dashboard=False)
    runs = []
    try:
        for workers in [0, *args.workers]:
            result = run_one(args.work, cache, graph, workers, args.chunk_nodes)
            runs.append(result)
            print(
                f"{result['mode']:>15}: {result['nodes']} nodes, {result['wall_s']:.1f} s wall "
                f"({result['startup_s']:.1f} s starting workers), "
                f"{result['extract_nodes_per_s']:.1f} nodes/s extracting",
                flush=True,
            )
            for line in result["worker_log"]:
                print(f"{'':>17}{line}")
    finally:
        ray.shutdown()
    single = runs[0]
    one = next(r for r in runs if r["workers"] == 1) if 1 in args.workers else runs[1]
    for run in runs[1:]:
        print(
            f"{run['mode']}: wall {single['wall_s'] / run['wall_s']:.2f}x single-process, "
            f"{one['wall_s'] / run['wall_s']:.2f}x 1 worker; extraction rate "
            f"{run['extract_nodes_per_s'] / one['extract_nodes_per_s']:.2f}x 1 worker"
        )
    write_result("distributed_rebuild", {"graph_nodes": total, "runs": runs})


if __name__ == "__main__":
    main()
