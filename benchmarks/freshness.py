"""Benchmark 5: freshness, from a node appended to the graph to a generation that holds it.

A real `amygdala-daemon run` subprocess on SmolLM2 watches a copy of the bundled graph at a
1 s poll, and publishes 0.1 s after a change (`publish.publish_after_s`). Once the graph is
ingested, each sample appends one new tagged node at a random moment of the poll cycle and
waits, on the websocket, for the `node_applied` event naming it and then for the next
`published` event; the published manifest's `ledger_seq` is checked to cover the node.

    .venv/bin/python benchmarks/freshness.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_WORK,
    Daemon,
    daemon_workspace,
    percentile,
    receive_until,
    request,
    set_threads,
    write_result,
)

PLACES = ["river", "station", "garden", "harbour", "library", "market", "hill", "kitchen"]


def new_node(number: int) -> dict[str, str]:
    place = PLACES[number % len(PLACES)]
    return {
        "id": f"fresh-{number:04d}-{int(time.time() * 1000)}",
        "text": (
            f"Sample {number}: a slow walk to the {place} after work, and for once nothing "
            "needed an answer. I noticed my breathing had gone slow and even.\ncalm:9"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--poll", type=float, default=1.0, help="daemon.poll_interval")
    parser.add_argument("--publish-after", type=float, default=0.1, help="publish_after_s")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    work, state, graph = daemon_workspace(args.work, "freshness")
    from websockets.sync.client import connect

    table: dict[str, Any] = {
        "state_dir": str(state),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {
            "name": "smollm2-135m",
            "device": args.device,
            "dtype": args.dtype,
            "threads": threads,
        },
        "daemon": {"poll_interval": args.poll},
        "publish": {"interval": "1h", "publish_after_s": args.publish_after},
    }
    daemon = Daemon(work, table, threads).start()
    rng = random.Random(args.seed)
    samples: list[dict[str, float]] = []
    try:
        started = time.monotonic()
        daemon.wait_connectable()
        with connect(daemon.url(), open_timeout=10, max_size=2**20) as client:
            while True:  # the initial ingestion of the bundled graph
                status = request(client, {"op": "status"})["status"]
                if status["generation"] is not None and status["backlog"] == 0:
                    break
                time.sleep(1.0)
            print(
                f"daemon ready, graph ingested: generation {status['generation']}, "
                f"{status['nodes']['applied']} nodes, {time.monotonic() - started:.0f} s; "
                f"torch threads {threads}, poll {args.poll} s, publish after "
                f"{args.publish_after} s",
                flush=True,
            )
            for number in range(1, args.samples + 1):
                time.sleep(rng.uniform(0.3, 0.3 + args.poll))  # any phase of the poll cycle
                node = new_node(number)
                with graph.open("a") as handle:
                    handle.write(json.dumps(node) + "\n")
                appended = time.monotonic()
                wanted = node["id"]

                def is_applied(message: dict[str, Any], wanted: str = wanted) -> bool:
                    return message.get("event") == "node_applied" and message.get("id") == wanted

                _, applied = receive_until(client, is_applied, 120)
                committed, _ = receive_until(
                    client, lambda m: m.get("event") == "batch_committed", 120
                )
                event, published = receive_until(
                    client, lambda m: m.get("event") == "published", 120
                )
                manifest = json.loads(Path(event["manifest"]).read_text())
                assert manifest["ledger_seq"] >= committed["ledger_seq"], "stale generation"
                sample = {
                    "total_s": published - appended,
                    "to_applied_s": applied - appended,
                    "applied_to_published_s": published - applied,
                    "generation": float(event["generation"]),
                }
                samples.append(sample)
                print(
                    f"  sample {number:2d}: {sample['total_s']:.2f} s "
                    f"(applied after {sample['to_applied_s']:.2f} s, published "
                    f"{sample['applied_to_published_s']:.2f} s later, "
                    f"generation {event['generation']})",
                    flush=True,
                )
            final = request(client, {"op": "status"})["status"]
    finally:
        code = daemon.stop()
    totals = [s["total_s"] for s in samples]
    figures = {
        "p50_s": percentile(totals, 50),
        "p95_s": percentile(totals, 95),
        "max_s": max(totals),
        "min_s": min(totals),
        "to_applied_p50_s": percentile([s["to_applied_s"] for s in samples], 50),
        "applied_to_published_p50_s": percentile(
            [s["applied_to_published_s"] for s in samples], 50
        ),
    }
    print()
    print(
        f"freshness over {len(samples)} samples ({threads} torch threads, poll {args.poll} s): "
        f"p50 {figures['p50_s']:.2f} s, p95 {figures['p95_s']:.2f} s, max {figures['max_s']:.2f} s"
    )
    print(
        f"  append -> node_applied p50 {figures['to_applied_p50_s']:.2f} s; "
        f"node_applied -> published p50 {figures['applied_to_published_p50_s']:.2f} s"
    )
    print(f"  goal p95 < 5 s: {'met' if figures['p95_s'] < 5 else 'missed'}")
    print(f"  daemon exit code after SIGTERM: {code}")
    write_result(
        "freshness" + ("" if args.device == "cpu" else f"_{args.device}"),
        {
            "threads": threads,
            "device": args.device,
            "dtype": args.dtype,
            "poll_interval_s": args.poll,
            "publish_after_s": args.publish_after,
            "samples": samples,
            "figures": figures,
            "goal_met": figures["p95_s"] < 5,
            "daemon_forward_sequences": final["daemon"]["forward_sequences"],
            "daemon_exit_code": code,
        },
        args.device,
    )


if __name__ == "__main__":
    main()
