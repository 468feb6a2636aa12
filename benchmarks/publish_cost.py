"""Benchmark 4: publish cost at 200 concepts x 4 layers x hidden 5120, and the checkpoint.

The accumulators are synthetic: a small ledger (random `[4, 5120]` float32 activations,
tags over 200 concepts, every concept positive on a few nodes) is refolded, then each
concept's positives and exclusions and the global accumulator are merged with synthetic
statistics standing for a much larger history. Publishing is what `Engine.publish` runs:
`publisher.build_release` (directions, the calibration sample, the held-out quality scores)
and `write_generation` (serialize, write, fsync, swap `current`, prune).

The time inside each stage is measured by wrapping the functions `publisher` calls, and one
publish is profiled with cProfile.

    .venv/bin/python benchmarks/publish_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import DEFAULT_WORK, Stopwatch, ms, set_threads, write_result

WORDS = ["morning", "river", "letter", "garden", "window", "meeting", "kitchen", "street"]


@contextmanager
def stage_clocks(module: Any, names: list[str]) -> Iterator[dict[str, float]]:
    """Accumulate wall time spent in `module.<name>` for each name, while open."""
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return timed

    try:
        for name, function in originals.items():
            setattr(module, name, wrap(name, function))
        yield spent
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def build_state(work: Path, concepts: int, nodes: int, hidden: int, seed: int) -> tuple[Any, Any]:
    """A ledger of `nodes` entries and a fold over it, merged with synthetic history."""
    import numpy as np

    from amygdala_daemon.accumulators import refold
    from amygdala_daemon.config import LabelsConfig
    from amygdala_daemon.ledger import Ledger, StoreEntry, Write
    from amygdala_daemon.stats import Welford

    rng = np.random.default_rng(seed)
    shape = (4, hidden)
    names = [f"concept{i:03d}" for i in range(concepts)]
    ledger = Ledger(work / "ledger.sqlite3")
    writes: list[Write] = []
    for index in range(nodes):
        # Every concept is a positive on some nodes; others are tagged at random.
        tags = {names[index % concepts]: 9.0}
        for name in rng.choice(names, size=int(rng.integers(0, 3)), replace=False):
            tags[str(name)] = float(rng.integers(0, 11))
        content = " ".join(rng.choice(WORDS, size=12)).capitalize() + "."
        activations = rng.standard_normal(shape, dtype=np.float32)
        writes.append(
            StoreEntry(
                f"n{index:06d}", f"h{index}", None, None, tags, content, 0, activations, 20, False
            )
        )
    ledger.apply(writes)
    fold = refold(ledger, shape, LabelsConfig())

    def history(count: int) -> Welford:
        mean = rng.standard_normal(shape)
        m2 = rng.random(shape) * count
        return Welford(count, mean, m2)

    fold.total.merge(history(100_000))
    for name in names:
        fold.positive[name].merge(history(int(rng.integers(50, 500))))
        fold.excluded[name].merge(history(int(rng.integers(500, 5000))))
    return ledger, fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--concepts", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=5120)
    parser.add_argument("--ledger-nodes", type=int, default=1000, help="entries in the ledger")
    parser.add_argument("--repeats", type=int, default=5, help="timed publishes")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    from amygdala_daemon import publisher
    from amygdala_daemon.accumulators import load_checkpoint, save_checkpoint
    from amygdala_daemon.config import from_dict
    from amygdala_daemon.publisher import ModelInfo

    work = args.work / "publish"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    setup = Stopwatch()
    with setup.running():
        ledger, fold = build_state(work, args.concepts, args.ledger_nodes, args.hidden, 0)
    config = from_dict({"state_dir": str(work)})
    model = ModelInfo(
        model_id="synthetic",
        revision="",
        layers=[32, 42, 51, 57],
        hidden_size=args.hidden,
        n_layers=64,
        pooling="mean",
        sink_norm_ratio=10.0,
        max_tokens=512,
    )
    published = work / "published"
    print(
        f"{args.concepts} concepts x 4 layers x hidden {args.hidden}; ledger of "
        f"{args.ledger_nodes} entries; torch threads {threads}; setup {setup.wall:.1f} s"
    )

    def publish(generation: int) -> Path:
        release = publisher.build_release(fold, ledger, config, model, published, generation)
        return publisher.write_generation(
            release, published, config.vectors.dtype, config.publish.keep
        )

    stages = [
        "select_concepts",
        "direction",
        "projection_spread",
        "manifest_quality",
        "calibrate",
        "serialize",
        "write_file",
        "swap_current",
        "prune",
    ]
    walls: list[float] = []
    breakdowns: list[dict[str, float]] = []
    generation = 0
    for attempt in range(args.repeats + 1):  # the first registers the concepts: a warm-up
        generation += 1
        with stage_clocks(publisher, stages) as spent:
            clock = Stopwatch()
            with clock.running():
                written = publish(generation)
        if attempt == 0:
            continue
        walls.append(clock.wall)
        breakdowns.append(dict(spent))
    size = (written / publisher.VECTORS_FILE).stat().st_size
    manifest_size = (written / publisher.MANIFEST_FILE).stat().st_size

    profiler = cProfile.Profile()
    generation += 1
    profiler.enable()
    publish(generation)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    profile_lines = [line for line in text.getvalue().splitlines() if line.strip()]

    checkpoint = work / "accumulators.npz"
    saves, loads = [], []
    for _ in range(3):
        clock = Stopwatch()
        with clock.running():
            save_checkpoint(fold, checkpoint)
        saves.append(clock.wall)
        clock = Stopwatch()
        with clock.running():
            loaded = load_checkpoint(checkpoint, fold.labels, fold.shape)
        loads.append(clock.wall)
        assert loaded is not None
    checkpoint_bytes = checkpoint.stat().st_size
    ledger.close()

    median = statistics.median(walls)
    stage_median = {
        name: statistics.median(b.get(name, 0.0) for b in breakdowns) for name in stages
    }
    rest = statistics.median(
        wall - sum(b.values()) for wall, b in zip(walls, breakdowns, strict=True)
    )
    print()
    print(f"publish: median {ms(median)} over {len(walls)} ({', '.join(ms(w) for w in walls)})")
    print(f"  goal < 250 ms: {'met' if median < 0.25 else 'missed'}  ({threads} torch threads)")
    print("  where the time goes (median per stage):")
    for name, spent_s in sorted(stage_median.items(), key=lambda item: -item[1]):
        print(f"    {name:20s} {ms(spent_s):>10s}  {spent_s / median:6.1%}")
    print(f"    {'(the rest)':20s} {ms(rest):>10s}")
    print(
        f"  vectors.safetensors {size / 2**20:.1f} MiB, "
        f"manifest.json {manifest_size / 2**10:.0f} KiB"
    )
    print(
        f"checkpoint: {checkpoint_bytes / 2**20:.1f} MiB, "
        f"save median {ms(statistics.median(saves))}"
        f", load median {ms(statistics.median(loads))}"
    )
    print("\ncProfile of one publish (cumulative):")
    for line in profile_lines[:40]:
        print("  " + line)
    write_result(
        "publish_cost",
        {
            "threads": threads,
            "concepts": args.concepts,
            "layers": 4,
            "hidden": args.hidden,
            "ledger_nodes": args.ledger_nodes,
            "publish_s_median": median,
            "publish_s_runs": walls,
            "goal_met": median < 0.25,
            "stages_s_median": stage_median,
            "rest_s_median": rest,
            "vectors_bytes": size,
            "manifest_bytes": manifest_size,
            "checkpoint_bytes": checkpoint_bytes,
            "checkpoint_save_s": saves,
            "checkpoint_load_s": loads,
            "profile": profile_lines[:60],
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
