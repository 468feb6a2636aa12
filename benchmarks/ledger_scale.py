"""The ledger at scale: synthetic activations at a real model's shape, up to a million nodes.

Nodes get 1-2 of 20 concepts and pooled activations drawn at random (`--layers` x
`--hidden`, stored as `--dtype`), and go through the writer's own path: `Ledger.apply` in
chunks of 128 plus the fold. Measured: ledger bytes per node; ingest rate; a full refold;
a checkpoint, then recovery (checkpoint plus replay of `--replay` newer nodes); one
publish; the daemon's poll diff against a snapshot of every node (hashes only); peak RSS.

    .venv/bin/python benchmarks/ledger_scale.py --nodes 1000000 --hidden 576 --dtype float32
    .venv/bin/python benchmarks/ledger_scale.py --nodes 20000 --hidden 5120 --dtype bfloat16

`--vectors` instead measures what each dtype does to the published vectors: the bundled
graph through SmolLM2-135M once, stored three times (float32, float16, bfloat16), published,
and each 16-bit result's cosine to the float32 one, per concept and layer.

    .venv/bin/python benchmarks/ledger_scale.py --vectors
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import DEFAULT_WORK, link_model_cache, set_threads, smollm2_cache, write_result

CONCEPTS = [f"concept{i:02d}" for i in range(20)]
CHUNK = 128
WORDS = [
    "the",
    "river",
    "keeps",
    "moving",
    "under",
    "a",
    "pale",
    "sky",
    "while",
    "we",
    "talk",
    "about",
    "small",
    "plans",
]


class Figures(dict[str, Any]):
    """Results, each printed as it is measured: a long run killed late keeps what it got."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_for(state: Path, dtype: str, shape: tuple[int, int], model: str = "synthetic") -> Any:
    """A writer with no model: the ledger adopts a described one, as after a first extraction."""
    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.core.fold import Accumulators
    from amygdala_daemon.core.manifest import ModelInfo
    from amygdala_daemon.engine.writer import Engine

    config = from_dict(
        {
            "state_dir": str(state),
            "source": {"kind": "jsonl", "path": str(state / "unused.jsonl")},
            "ledger": {"activation_dtype": dtype},
        }
    )
    engine = Engine(config)
    if engine.model_info is None:
        info = ModelInfo(model, "0", list(range(shape[0])), shape[1], shape[0], "mean", 10.0, 512)
        engine.model_info = info
        engine.ledger.set_meta_committed("model", info.to_json())
        engine.fold = Accumulators(shape, config.labels, engine.ledger.seq)
    return engine


def synthetic_writes(start: int, count: int, shape: tuple[int, int], rng: Any) -> list[Any]:
    import numpy as np

    from amygdala_daemon.core.changes import StoreEntry
    from amygdala_daemon.sources.base import node_hash

    writes = []
    noise = rng.standard_normal((count, *shape), dtype=np.float32)
    for offset in range(count):
        index = start + offset
        picked = [CONCEPTS[index % 20], CONCEPTS[(index * 7) % 20]] if index % 3 else []
        tags = {name: float(9 if k == 0 else 3) for k, name in enumerate(picked)}
        content = " ".join(WORDS[(index + k) % len(WORDS)] for k in range(12)) + f" {index}"
        activations = noise[offset]
        if picked:
            activations[:, index % 20] += 2.0
        text = content + ("\n" + " ".join(f"{n}:{int(s)}" for n, s in tags.items()))
        writes.append(
            StoreEntry(f"n{index}", node_hash(text, None), None, None, tags, content, 0,
                       activations, 20, False)
        )  # fmt: skip
    return writes


def scale(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from amygdala_daemon.core.paths import StatePaths

    shape = (args.layers, args.hidden)
    state = args.work / f"scale-{args.nodes}-{args.hidden}-{args.dtype}"
    if args.reuse:  # a ledger a killed run left: recovery, then the reads, then publish
        t = time.perf_counter()
        engine = engine_for(state, args.dtype, shape)
        out = Figures(nodes=args.nodes, recover_s=time.perf_counter() - t)
        size = sum(p.stat().st_size for p in state.glob("ledger.sqlite*"))
        out["ledger_bytes_per_node"] = size / engine.ledger.live_count()
        return measure_reads(args, engine, out, state)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    rng = np.random.default_rng(0)
    engine = engine_for(state, args.dtype, shape)
    base = args.nodes - args.replay
    out = Figures(nodes=args.nodes, shape=shape, dtype=args.dtype)
    start = time.perf_counter()
    for first in range(0, base, CHUNK):
        engine._apply(synthetic_writes(first, min(CHUNK, base - first), shape, rng))
        if first and first % (CHUNK * 800) == 0:
            rate = first / (time.perf_counter() - start)
            print(f"  {first} nodes, {rate:.0f} nodes/s", flush=True)
    out["ingest_nodes_per_s"] = base / (time.perf_counter() - start)
    t = time.perf_counter()
    engine._checkpoint_seq = -1
    engine.checkpoint()
    out["checkpoint_s"] = time.perf_counter() - t
    for first in range(base, args.nodes, CHUNK):
        engine._apply(synthetic_writes(first, min(CHUNK, args.nodes - first), shape, rng))
    paths = StatePaths(state)
    size = sum(p.stat().st_size for p in paths.root.glob("ledger.sqlite*"))
    out["ledger_bytes_per_node"] = size / args.nodes
    out["checkpoint_bytes"] = paths.checkpoint.stat().st_size
    if not args.reuse:
        t = time.perf_counter()
        engine.publish(force=True)
        out["publish_s"] = time.perf_counter() - t
    return measure_reads(args, engine, out, state)


def measure_reads(args: argparse.Namespace, engine: Any, out: Figures, state: Path) -> Figures:
    """The figures that read a full ledger: poll diff, refold, recovery (then publish)."""
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.sources.base import Snapshot, SourceNode, diff
    from amygdala_daemon.store.recovery import refold

    shape = (args.layers, args.hidden)
    t = time.perf_counter()
    known = engine.ledger.known_hashes()
    out["known_hashes_s"] = time.perf_counter() - t
    nodes = {node_id: SourceNode(node_id, "x") for node_id in known}
    snapshot = Snapshot(nodes)
    for node in nodes.values():
        node.__dict__["content_hash"] = known[node.id]  # a source hands out cached hashes
    for node_id in list(nodes)[:10]:
        nodes[node_id] = SourceNode(node_id, "changed")
    t = time.perf_counter()
    changes = diff(snapshot, known)
    out["poll_diff_s"] = time.perf_counter() - t
    assert len(changes) == 10, len(changes)
    del nodes, snapshot, changes
    t = time.perf_counter()
    refold(engine.ledger, shape, engine.config.labels)
    out["refold_s"] = time.perf_counter() - t
    engine.close()
    t = time.perf_counter()
    recovered = Engine(engine.config)  # checkpoint plus replay of the last `--replay` nodes
    out["recover_s"] = time.perf_counter() - t
    assert recovered.fold is not None and recovered.fold.ledger_seq == recovered.ledger.seq
    if args.reuse:
        t = time.perf_counter()
        recovered.publish(force=True)
        out["publish_s"] = time.perf_counter() - t
    recovered.close()
    out["peak_rss_mib"] = peak_rss_mib()
    if not args.keep:
        shutil.rmtree(state, ignore_errors=True)
    return out


def vectors(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.core.paths import StatePaths
    from amygdala_daemon.core.tags import parse_text
    from amygdala_daemon.engine.ingest import entry_write
    from amygdala_daemon.engine.writer import load_extractor
    from amygdala_daemon.reader import load_readout
    from amygdala_daemon.sources import bundled_sample_path, open_source

    cache = smollm2_cache(args.work)
    root = args.work / "vectors"
    shutil.rmtree(root, ignore_errors=True)
    link_model_cache(root / "extract", cache)
    table = {"state_dir": str(root / "extract"), "model": {"device": "cpu", "threads": 1}}
    extractor, info = load_extractor(from_dict(table))
    source = open_source(from_dict({"source": {"path": str(bundled_sample_path())}}).source)
    nodes = sorted(source.snapshot().nodes.values(), key=lambda n: n.id)
    parsed = [parse_text(node.text, {}) for node in nodes]
    kept = [(n, p) for n, p in zip(nodes, parsed, strict=True) if p.tags and p.content]
    results = extractor.extract([p.content for _, p in kept])
    writes = [entry_write(n, p, r) for (n, p), r in zip(kept, results, strict=True)]
    readouts = {}
    sizes = {}
    for dtype in ("float32", "float16", "bfloat16"):
        engine = engine_for(
            root / dtype, dtype, (len(info.layers), info.hidden_size), info.model_id
        )
        engine.model_info = info
        engine.ledger.set_meta_committed("model", info.to_json())
        engine._apply(writes)
        engine.publish(force=True)
        sizes[dtype] = engine.ledger.conn.execute(
            "SELECT avg(length(activations)) FROM entries"
        ).fetchone()[0]
        engine.close()
        readouts[dtype] = load_readout(StatePaths(root / dtype).current)
    out: dict[str, Any] = {"nodes": len(writes), "blob_bytes_per_node": sizes, "cosine": {}}
    base = readouts["float32"]
    for dtype in ("float16", "bfloat16"):
        other = readouts[dtype]
        assert other.concepts == base.concepts
        cosines = []
        for layer, rows in base.vectors.items():
            for row, concept in enumerate(base.concepts):
                a, b = rows[row].astype(np.float64), other.vectors[layer][row].astype(np.float64)
                cosines.append(
                    (concept, layer, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
                )
        values = [c for _, _, c in cosines]
        worst = min(cosines, key=lambda c: c[2])
        out["cosine"][dtype] = {"min": min(values), "mean": float(np.mean(values)), "worst": worst}
        print(
            f"{dtype}: cosine to float32 over {len(values)} concept x layer vectors: min "
            f"{min(values):.8f} ({worst[0]} layer {worst[1]}), mean {np.mean(values):.8f}"
        )
    print("stored bytes per node (activation BLOB):", json.dumps(sizes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=576, help="576: SmolLM2-135M")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--replay", type=int, default=1000, help="nodes after the checkpoint")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / "ledger-scale")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument("--reuse", action="store_true", help="measure a kept ledger's reads")
    parser.add_argument("--vectors", action="store_true", help="dtype effect on the vectors")
    args = parser.parse_args()
    set_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    if args.vectors:
        result = vectors(args)
        write_result("ledger_dtype_vectors", result)
        return
    result = scale(args)
    result["started"] = started.isoformat()
    write_result(f"ledger_scale_{args.nodes}_{args.hidden}_{args.dtype}", result)


if __name__ == "__main__":
    main()
