"""Benchmark 4: publish cost at 200 concepts x 4 layers x hidden 5120, and the checkpoint.

The accumulators are synthetic: a small ledger (random `[4, 5120]` float32 activations,
tags over 200 concepts, every concept positive on a few nodes) is refolded, then each
concept's positives and exclusions and the global accumulator are merged with synthetic
statistics standing for a much larger history. Publishing is what `Engine.publish` runs:
`engine.publish.Publisher.publish`: the release (`core.release`: directions, calibration,
and the sampled evaluation when it is due) and `write_generation` (serialize, write, fsync,
swap `current`, prune).

Two kinds of publish are timed, interleaved, in one run:
- *routine*: 10 new nodes were applied since the last generation, as in the daemon; the
  sampled figures (projection spreads, held-out quality) are carried over, since
  `evaluation_due` finds them current;
- *evaluating*: the same, with the sampled evaluation measured again (`force`).

The time inside each stage is measured by wrapping the functions the publisher calls, and one
publish of each kind is profiled with cProfile.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import DEFAULT_WORK, Stopwatch, ms, set_threads, write_result

WORDS = ["morning", "river", "letter", "garden", "window", "meeting", "kitchen", "street"]


@contextmanager
def stage_clocks(stages: list[tuple[Any, str]]) -> Iterator[dict[str, float]]:
    """Accumulate wall time spent in `module.<name>` for each (module, name), while open."""
    spent: dict[str, float] = defaultdict(float)
    originals = {(module, name): getattr(module, name) for module, name in stages}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return timed

    try:
        for (module, name), function in originals.items():
            setattr(module, name, wrap(name, function))
        yield spent
    finally:
        for (module, name), function in originals.items():
            setattr(module, name, function)


def make_writes(rng: Any, names: list[str], start: int, count: int, hidden: int) -> list[Any]:
    """`count` nodes from `n{start}` on: one concept each by turn, up to two more at random."""
    import numpy as np

    from amygdala_daemon.core.changes import StoreEntry

    writes = []
    for index in range(start, start + count):
        tags = {names[index % len(names)]: 9.0}
        for name in rng.choice(names, size=int(rng.integers(0, 3)), replace=False):
            tags[str(name)] = float(rng.integers(0, 11))
        content = " ".join(rng.choice(WORDS, size=12)).capitalize() + "."
        activations = rng.standard_normal((4, hidden), dtype=np.float32)
        writes.append(
            StoreEntry(
                f"n{index:06d}", f"h{index}", None, None, tags, content, 0, activations, 20, False
            )
        )
    return writes


def build_state(work: Path, names: list[str], nodes: int, hidden: int, rng: Any) -> tuple[Any, Any]:
    """A ledger of `nodes` entries and a fold over it, merged with synthetic history."""
    from amygdala_daemon.core.config import LabelsConfig
    from amygdala_daemon.core.stats import Welford
    from amygdala_daemon.store.ledger import Ledger
    from amygdala_daemon.store.recovery import refold

    shape = (4, hidden)
    ledger = Ledger(work / "ledger.sqlite3")
    ledger.apply(make_writes(rng, names, 0, nodes, hidden))
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
    parser.add_argument(
        "--method", default=None, help="vectors.method (default: the configuration's default)"
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import numpy as np

    from amygdala_daemon.core import release
    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.core.manifest import MANIFEST_FILE, VECTORS_FILE, ModelInfo
    from amygdala_daemon.engine import publish as publishing
    from amygdala_daemon.store import generations
    from amygdala_daemon.store.checkpoint import load_checkpoint, save_checkpoint
    from amygdala_daemon.store.recovery import fold_changes

    work = args.work / "publish"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"concept{i:03d}" for i in range(args.concepts)]
    setup = Stopwatch()
    with setup.running():
        ledger, fold = build_state(work, names, args.ledger_nodes, args.hidden, rng)
    vectors = {"method": args.method} if args.method else {}
    config = from_dict({"state_dir": str(work), "vectors": vectors})
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
    print(
        f"{args.concepts} concepts x 4 layers x hidden {args.hidden}; ledger of "
        f"{args.ledger_nodes} entries; method {config.vectors.method}; "
        f"torch threads {threads}; setup {setup.wall:.1f} s"
    )
    state = {"next_node": args.ledger_nodes}

    def new_nodes(count: int = 10) -> None:
        """What the daemon does between two publishes: apply a few nodes."""
        writes = make_writes(rng, names, state["next_node"], count, args.hidden)
        state["next_node"] += count
        fold_changes(fold, ledger.apply(writes), ledger)

    publisher = publishing.Publisher(ledger, config, model)

    def publish(force_evaluation: bool) -> Path:
        written = publisher.publish(fold, datetime.now(UTC), force=force_evaluation)
        assert written is not None
        return written

    stages = [
        (publishing, "select_concepts"),
        (publishing, "covariance_solver"),
        (release, "directions"),
        (publishing, "evaluation_due"),
        (publishing, "evaluate"),
        (release, "calibrate"),
        (generations, "serialize"),
        (generations, "write_file"),
        (generations, "swap_current"),
        (generations, "prune"),
    ]
    kinds = {"routine": False, "evaluating": True}
    walls: dict[str, list[float]] = {kind: [] for kind in kinds}
    breakdowns: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    publish(True)  # the first registers the concepts and measures: a warm-up
    for _ in range(args.repeats):
        for kind, force in kinds.items():
            new_nodes()
            with stage_clocks(stages) as spent:
                clock = Stopwatch()
                with clock.running():
                    written = publish(force)
            walls[kind].append(clock.wall)
            breakdowns[kind].append(dict(spent))
            manifest = generations.read_manifest(written)
            assert manifest is not None
            measured = manifest["evaluation"]["ledger_seq"] == manifest["ledger_seq"]
            assert measured == force, f"{kind}: evaluation measured {measured}"
    size = (written / VECTORS_FILE).stat().st_size
    manifest_size = (written / MANIFEST_FILE).stat().st_size

    profiles: dict[str, list[str]] = {}
    for kind, force in kinds.items():
        new_nodes()
        profiler = cProfile.Profile()
        profiler.enable()
        publish(force)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        profiles[kind] = [line for line in text.getvalue().splitlines() if line.strip()]

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

    results: dict[str, Any] = {}
    print()
    for kind in kinds:
        median = statistics.median(walls[kind])
        stage_median = {
            name: statistics.median(b.get(name, 0.0) for b in breakdowns[kind])
            for _, name in stages
        }
        rest = statistics.median(
            wall - sum(b.values()) for wall, b in zip(walls[kind], breakdowns[kind], strict=True)
        )
        runs = ", ".join(ms(w) for w in walls[kind])
        print(f"{kind} publish: median {ms(median)} over {len(walls[kind])} ({runs})")
        print("  where the time goes (median per stage):")
        for name, spent_s in sorted(stage_median.items(), key=lambda item: -item[1]):
            if spent_s > 0:
                print(f"    {name:20s} {ms(spent_s):>10s}  {spent_s / median:6.1%}")
        print(f"    {'(the rest)':20s} {ms(rest):>10s}")
        results[kind] = {
            "s_median": median,
            "s_runs": walls[kind],
            "stages_s_median": stage_median,
            "rest_s_median": rest,
            "profile": profiles[kind][:60],
        }
    routine = results["routine"]["s_median"]
    ratio = results["evaluating"]["s_median"] / routine
    verdict = "met" if routine < 0.25 else "missed"
    print(f"goal: a routine publish under 250 ms: {ms(routine)} ({verdict})")
    print(f"a publish that also evaluates costs {ratio:.1f}x a routine one")
    print(
        f"vectors.safetensors {size / 2**20:.1f} MiB, manifest.json {manifest_size / 2**10:.0f} KiB"
    )
    print(
        f"checkpoint: {checkpoint_bytes / 2**20:.1f} MiB, "
        f"save median {ms(statistics.median(saves))}"
        f", load median {ms(statistics.median(loads))}"
    )
    for kind in kinds:
        print(f"\ncProfile of one {kind} publish (cumulative):")
        for line in profiles[kind][:40]:
            print("  " + line)
    write_result(
        "publish_cost",
        {
            "threads": threads,
            "concepts": args.concepts,
            "layers": 4,
            "hidden": args.hidden,
            "ledger_nodes": args.ledger_nodes,
            "new_nodes_between_publishes": 10,
            "publish": results,
            "evaluating_over_routine": ratio,
            "goal_met": routine < 0.25,
            "vectors_bytes": size,
            "manifest_bytes": manifest_size,
            "checkpoint_bytes": checkpoint_bytes,
            "checkpoint_save_s": saves,
            "checkpoint_load_s": loads,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
