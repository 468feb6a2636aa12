"""Benchmark 3: the cost of applying 10 new nodes as the ledger grows (1k, 10k, 100k nodes).

The ledger is filled with synthetic nodes: SmolLM2-shaped activations (`[4, 576]` float32,
random), one to three of the bundled graph's 14 emotions as tags, and word-salad content
that sometimes mentions an emotion. Entries go in through `Ledger.apply` in large
transactions; the fold is built by `accumulators.refold` and checkpointed, as a restart
would. Then, at each size, repeated trials time:

- 10 new nodes: `Ledger.apply` (one transaction) + `Accumulators.apply` per change;
- 10 edits of existing nodes (each a retraction and an add), the same way;
- a checkpoint after them (`save_checkpoint` + `forget_retracted`, as `Engine.checkpoint`);
- one node with a tag never seen before (the fold seeds the new concept from the ledger);
- a poll (what the daemon pays every `poll_interval`): reading a JSONL graph of that size
  and diffing it against the ledger's hashes, three ways: in a fresh process (the file is
  parsed whole and the hashes read from SQLite), with nothing new since the last poll, and
  with 10 nodes appended since it (the writer keeps its hashes in memory).

No model is involved.

    .venv/bin/python benchmarks/incremental_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from benchlib import DEFAULT_WORK, Stopwatch, ms, set_threads, summary, write_result

EMOTIONS = [
    "anxiety",
    "awe",
    "calm",
    "clarity",
    "confusion",
    "curiosity",
    "determination",
    "frustration",
    "gratitude",
    "joy",
    "loneliness",
    "pride",
    "sadness",
    "warmth",
]
WORDS = [
    "the",
    "morning",
    "scheduler",
    "bug",
    "friend",
    "evening",
    "walk",
    "train",
    "coffee",
    "notes",
    "project",
    "draft",
    "review",
    "garden",
    "rain",
    "window",
    "letter",
    "meeting",
    "code",
    "test",
    "kitchen",
    "music",
    "river",
    "book",
    "plan",
    "quiet",
    "long",
    "short",
    "afternoon",
    "message",
    "call",
    "deadline",
    "team",
    "sister",
    "father",
    "garden",
    "lamp",
    "street",
    "market",
]
SHAPE = (4, 576)
T = TypeVar("T")

if TYPE_CHECKING:  # numpy is imported after the thread count is set (BLAS reads it once)
    import numpy as np


class Synthetic:
    """Deterministic synthetic nodes."""

    def __init__(self, seed: int = 0) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)

    def content(self) -> str:
        words = list(self.rng.choice(WORDS, size=int(self.rng.integers(12, 30))))
        if self.rng.random() < 0.1:  # some nodes mention an emotion by name
            words.insert(int(self.rng.integers(0, len(words))), str(self.rng.choice(EMOTIONS)))
        return " ".join(words).capitalize() + "."

    def tags(self) -> dict[str, float]:
        names = self.rng.choice(EMOTIONS, size=int(self.rng.integers(1, 4)), replace=False)
        return {str(name): float(self.rng.integers(0, 11)) for name in names}

    def activations(self) -> np.ndarray:
        import numpy as np

        return self.rng.standard_normal(SHAPE, dtype=np.float32)

    def write(self, node_id: str, tags: dict[str, float] | None = None) -> tuple[Any, str]:
        """A `StoreEntry` and the node's full text (content plus its tag line)."""
        from amygdala_daemon.core.changes import StoreEntry
        from amygdala_daemon.sources.base import node_hash

        content = self.content()
        tags = tags if tags is not None else self.tags()
        text = content + "\n" + " ".join(f"{k}:{v:g}" for k, v in tags.items())
        entry = StoreEntry(
            node_id,
            node_hash(text, None),
            None,
            None,
            tags,
            content,
            0,
            self.activations(),
            20,
            False,
        )
        return entry, text


def timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    clock = Stopwatch()
    with clock.running():
        value = function(*args)
    return value, clock.wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--trials", type=int, default=20, help="trials per size")
    parser.add_argument("--new-nodes", type=int, default=10)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the ledger afterwards")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    from amygdala_daemon.core.config import LabelsConfig
    from amygdala_daemon.core.fold import Accumulators
    from amygdala_daemon.sources.base import diff
    from amygdala_daemon.sources.jsonl import JsonlSource
    from amygdala_daemon.store.checkpoint import save_checkpoint
    from amygdala_daemon.store.ledger import Ledger
    from amygdala_daemon.store.recovery import fold_changes, refold

    work = args.work / "incremental"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ledger = Ledger(work / "ledger.sqlite3")
    graph = work / "graph.jsonl"
    checkpoint = work / "accumulators.npz"
    labels = LabelsConfig()
    synthetic = Synthetic()
    count = 0
    next_id = 0
    results: dict[str, Any] = {}
    print(f"torch threads {threads}; {args.trials} trials per size; activations {SHAPE} float32")

    def fresh_id() -> str:
        nonlocal next_id
        next_id += 1
        return f"node-{next_id:08d}"

    def apply_and_fold(written: list[tuple[Any, str]], fold: Accumulators) -> tuple[float, float]:
        writes = [write for write, _ in written]
        changes, ledger_s = timed(ledger.apply, writes)

        clock = Stopwatch()
        with clock.running():
            fold_changes(fold, changes, ledger)
        fold_s = clock.wall
        # Keep the graph file in step with the ledger, for the next size's poll figure.
        with graph.open("a") as handle:
            for write, text in written:
                handle.write(json.dumps({"id": write.node_id, "text": text}) + "\n")
        return ledger_s, fold_s

    def checkpoint_now(fold: Accumulators, previous: int) -> None:
        """What `Engine.checkpoint` does."""
        save_checkpoint(fold, checkpoint)
        ledger.forget_retracted(previous)

    for size in args.sizes:
        fill = Stopwatch()
        with fill.running(), graph.open("a") as handle:
            while count < size:
                chunk = [synthetic.write(fresh_id()) for _ in range(min(5000, size - count))]
                ledger.apply([write for write, _ in chunk])
                for write, text in chunk:
                    handle.write(json.dumps({"id": write.node_id, "text": text}) + "\n")
                count += len(chunk)
        fold, refold_s = timed(refold, ledger, SHAPE, labels)
        _, checkpoint_full_s = timed(save_checkpoint, fold, checkpoint)
        # A poll: read the graph, then diff it against the ledger's hashes. First in a fresh
        # process (the whole file is parsed), then again with nothing new (a warm source).
        # A fresh process reads every node's hash from SQLite; the writer then keeps them.
        source = JsonlSource(graph)
        snapshot, snapshot_s = timed(source.snapshot)
        reader = Ledger(work / "ledger.sqlite3", readonly=True)
        known, known_s = timed(reader.known_hashes)
        reader.close()
        changes, diff_s = timed(diff, snapshot, known)
        assert len(changes) == 0, f"the synthetic graph and the ledger disagree: {len(changes)}"
        # A poll more than 2 s after the file's last write lets the next one skip reading
        # (the source's same-tick margin): the steady state of an idle graph.
        time.sleep(2.2)
        source.snapshot()
        warm, warm_snapshot_s = timed(source.snapshot)
        known, warm_known_s = timed(ledger.known_hashes)
        _, warm_diff_s = timed(diff, warm, known)

        rows: dict[str, list[float]] = {
            "new_ledger": [],
            "new_fold": [],
            "new_total": [],
            "edit_ledger": [],
            "edit_fold": [],
            "edit_total": [],
            "checkpoint": [],
            "new_concept_total": [],
        }
        live = [f"node-{i:08d}" for i in range(1, count + 1, max(1, count // 1000))]
        for trial in range(args.trials):
            written = [synthetic.write(fresh_id()) for _ in range(args.new_nodes)]
            ledger_s, fold_s = apply_and_fold(written, fold)
            rows["new_ledger"].append(ledger_s)
            rows["new_fold"].append(fold_s)
            rows["new_total"].append(ledger_s + fold_s)
            edited = [live[(trial * args.new_nodes + i) % len(live)] for i in range(args.new_nodes)]
            ledger_s, fold_s = apply_and_fold([synthetic.write(i) for i in edited], fold)
            rows["edit_ledger"].append(ledger_s)
            rows["edit_fold"].append(fold_s)
            rows["edit_total"].append(ledger_s + fold_s)
            before = fold.ledger_seq

            rows["checkpoint"].append(timed(checkpoint_now, fold, before)[1])
            if trial < 3:  # each one adds a concept for good: a few are enough
                novel = {f"novel{size}x{trial}": 9.0}
                ledger_s, fold_s = apply_and_fold([synthetic.write(fresh_id(), novel)], fold)
                rows["new_concept_total"].append(ledger_s + fold_s)
        count += args.trials * args.new_nodes + min(args.trials, 3)
        # A poll after 10 nodes were appended to the graph, the source warm from the last.
        source.snapshot()
        with graph.open("a") as handle:
            for _ in range(args.new_nodes):
                _, text = synthetic.write(fresh_id())
                handle.write(json.dumps({"id": f"appended-{next_id}", "text": text}) + "\n")
        appended, appended_snapshot_s = timed(source.snapshot)
        known, appended_known_s = timed(ledger.known_hashes)
        changes, appended_diff_s = timed(diff, appended, known)
        assert len(changes.upserts) == args.new_nodes, len(changes)
        # Put the ledger in step with the graph again, for the next size.
        lines = graph.read_text().splitlines()
        graph.write_text("".join(f"{text}\n" for text in lines[: -args.new_nodes]))
        figures: dict[str, Any] = {name: summary(values) for name, values in rows.items()}
        figures.update(
            {
                "ledger_nodes": size,
                "fill_s": fill.wall,
                "refold_s": refold_s,
                "checkpoint_after_refold_s": checkpoint_full_s,
                "checkpoint_bytes": checkpoint.stat().st_size,
                "ledger_bytes": sum(
                    p.stat().st_size for p in work.glob("ledger.sqlite3*") if p.is_file()
                ),
                "poll_snapshot_s": snapshot_s,
                "poll_known_hashes_s": known_s,
                "poll_diff_s": diff_s,
                "warm_poll_snapshot_s": warm_snapshot_s,
                "warm_poll_known_hashes_s": warm_known_s,
                "warm_poll_diff_s": warm_diff_s,
                "appended_poll_snapshot_s": appended_snapshot_s,
                "appended_poll_known_hashes_s": appended_known_s,
                "appended_poll_diff_s": appended_diff_s,
                "concepts": len(fold.concepts),
            }
        )
        results[str(size)] = figures
        print(
            f"{size:>7d} nodes: 10 new {ms(figures['new_total']['median'])} "
            f"(ledger {ms(figures['new_ledger']['median'])}, "
            f"fold {ms(figures['new_fold']['median'])}), "
            f"10 edits {ms(figures['edit_total']['median'])}, "
            f"checkpoint {ms(figures['checkpoint']['median'])}, "
            f"new concept {ms(figures['new_concept_total']['median'])}; "
            f"poll: fresh process {ms(snapshot_s + known_s + diff_s)}, "
            f"nothing new {ms(warm_snapshot_s + warm_known_s + warm_diff_s)}, "
            f"10 appended {ms(appended_snapshot_s + appended_known_s + appended_diff_s)}; "
            f"refold {refold_s:.1f} s",
            flush=True,
        )

    ledger.close()
    first, last = str(args.sizes[0]), str(args.sizes[-1])
    growth = results[last]["new_total"]["median"] / results[first]["new_total"]["median"]
    print()
    print(
        f"{'nodes':>8s} {'10 new':>10s} {'p95':>9s} {'ledger':>9s} {'fold':>9s} "
        f"{'10 edits':>10s} {'ckpt':>9s} {'new tag':>10s} {'poll':>10s} {'warm':>9s} "
        f"{'+10':>9s} {'refold':>8s}"
        f"   ({threads} torch threads; medians of {args.trials})"
    )
    for size, f in results.items():
        poll = f["poll_snapshot_s"] + f["poll_known_hashes_s"] + f["poll_diff_s"]
        warm = f["warm_poll_snapshot_s"] + f["warm_poll_known_hashes_s"] + f["warm_poll_diff_s"]
        appended = (
            f["appended_poll_snapshot_s"]
            + f["appended_poll_known_hashes_s"]
            + f["appended_poll_diff_s"]
        )
        print(
            f"{size:>8s} {ms(f['new_total']['median']):>10s} {ms(f['new_total']['p95']):>9s} "
            f"{ms(f['new_ledger']['median']):>9s} {ms(f['new_fold']['median']):>9s} "
            f"{ms(f['edit_total']['median']):>10s} {ms(f['checkpoint']['median']):>9s} "
            f"{ms(f['new_concept_total']['median']):>10s} {ms(poll):>10s} {ms(warm):>9s} "
            f"{ms(appended):>9s} {f['refold_s']:7.1f}s"
        )
    print(
        f"goal: 10 new nodes cost the same within 2x from {first} to {last} nodes: "
        f"{growth:.2f}x ({'met' if growth <= 2 else 'missed'})"
    )
    write_result(
        "incremental_cost",
        {
            "threads": threads,
            "trials": args.trials,
            "new_nodes": args.new_nodes,
            "shape": list(SHAPE),
            "results": results,
            "growth_new_total_median": growth,
            "goal_met": growth <= 2,
            "median_new_total_s": statistics.median(
                f["new_total"]["median"] for f in results.values()
            ),
        },
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
