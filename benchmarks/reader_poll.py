"""How much `ReadoutWatcher.poll()` costs in a consumer's hot loop, against a bare `os.stat`.

    .venv/bin/python benchmarks/reader_poll.py [--calls N]

Builds a real published file (random unit rows, SmolLM2's shape: 14 concepts x 4 layers x 576),
then times, in one run: an empty loop, `os.stat` of the file, `poll()` with no change, and
`poll()` with `min_interval=0.05`. Writes benchmarks/results/reader_poll.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from amygdala_daemon.core.manifest import Release, parse_manifest
from amygdala_daemon.reader import ReadoutWatcher
from amygdala_daemon.store.generations import serialize


def per_call_ns(function: object, calls: int) -> float:
    assert callable(function)
    start = time.perf_counter_ns()
    for _ in range(calls):
        function()
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    layers = [14, 19, 23, 26]
    vectors = {}
    for layer in layers:
        rows = rng.normal(size=(14, 576))
        vectors[layer] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    # Only the keys a reader relies on: the poll never looks at the rest.
    manifest = parse_manifest(
        {
            "concepts": [f"c{i}" for i in range(14)],
            "layers": layers,
            "hidden_size": 576,
            "generation": 1,
        }
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vectors.safetensors"
        path.write_bytes(serialize(Release(vectors, manifest), "float32")[0])
        watcher = ReadoutWatcher(path)
        throttled = ReadoutWatcher(path, min_interval=0.05)
        assert watcher.current is not None and watcher.current.generation == 1
        figures = {
            "empty_loop_ns": per_call_ns(lambda: None, args.calls),
            "os_stat_ns": per_call_ns(lambda: os.stat(path), args.calls),
            "poll_unchanged_ns": per_call_ns(watcher.poll, args.calls),
            "poll_min_interval_0.05_ns": per_call_ns(throttled.poll, args.calls),
        }
    figures["poll_over_stat"] = figures["poll_unchanged_ns"] / figures["os_stat_ns"]
    for name, value in figures.items():
        print(f"{name:28s} {value:10.1f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "reader_poll.json").write_text(json.dumps({"calls": args.calls, **figures}, indent=2))


if __name__ == "__main__":
    main()
