"""Benchmark 6: peak memory of `amygdala-daemon rebuild` and of the daemon idle, on SmolLM2.

Both run as real subprocesses on a copy of the bundled graph. Their `/proc/PID/status` is
polled for VmRSS (resident now) and VmHWM (the peak so far); after the rebuild exits,
`getrusage(RUSAGE_CHILDREN).ru_maxrss` gives its peak as the kernel recorded it. The daemon
then starts on the rebuilt state, so it has nothing to ingest, and is sampled while idle
twice: right after start, and again after one appended node has gone through the model.
The second is the daemon's usual idle state: the weights are memory-mapped from the
safetensors file, and only a forward pass makes them resident.

    .venv/bin/python benchmarks/memory.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_WORK,
    REPO,
    Daemon,
    MemoryWatch,
    children_max_rss_kib,
    cli,
    daemon_workspace,
    read_status_kib,
    receive_until,
    request,
    set_threads,
    toml_text,
    write_result,
)


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--idle-s", type=float, default=15.0, help="seconds sampled while idle")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch directory")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    work, state, graph = daemon_workspace(args.work, "memory")
    from websockets.sync.client import connect

    table: dict[str, Any] = {
        "state_dir": str(state),
        "source": {"kind": "jsonl", "path": str(graph)},
        "publish": {"interval": "1h", "publish_after_s": 0.1},
        "model": {"name": "smollm2-135m", "device": "cpu", "threads": threads},
        "daemon": {"poll_interval": 1.0},
    }
    config = work / "rebuild.toml"
    config.write_text(toml_text(table))

    print(f"rebuild of the bundled graph ({threads} torch threads) ...", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        cli(config, "rebuild"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    watch = MemoryWatch(process.pid).start()
    _, stderr = process.communicate()
    watch.stop()
    rebuild_s = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"rebuild failed: {stderr.decode()[-2000:]}")
    rebuild: dict[str, Any] = {
        "wall_s": rebuild_s,
        "vmhwm_polled_kib": watch.peak_hwm_kib,
        "vmrss_polled_max_kib": watch.peak_rss_kib,
        "ru_maxrss_kib": children_max_rss_kib(),
        # (seconds since start, VmRSS MiB), about 40 points: where in the run the peak is.
        "rss_timeline_mib": [
            (round(t, 1), round(kib / 1024))
            for t, kib in watch.samples[:: max(1, len(watch.samples) // 40)]
        ],
    }
    print(
        f"  {rebuild_s:.0f} s; peak RSS {mib(rebuild['ru_maxrss_kib'])} (ru_maxrss), "
        f"{mib(rebuild['vmhwm_polled_kib'])} (VmHWM polled)"
    )

    print(f"daemon on the rebuilt state, idle for {args.idle_s:.0f} s ...", flush=True)
    daemon = Daemon(work, table, threads).start()
    try:
        daemon.wait_connectable()
        with connect(daemon.url(), open_timeout=10) as client:
            status = request(client, {"op": "status"})["status"]
            assert status["backlog"] == 0, status
            ready = read_status_kib(daemon.pid)
            fresh = sample_idle(daemon.pid, args.idle_s)
            node = {
                "id": "memory-probe",
                "text": "A long quiet evening with the window open and nothing left to do.\ncalm:9",
            }
            with graph.open("a") as handle:
                handle.write(json.dumps(node) + "\n")
            receive_until(client, lambda m: m.get("event") == "published", 120)
            warm = sample_idle(daemon.pid, args.idle_s)
            forward = request(client, {"op": "status"})["status"]["daemon"]["forward_sequences"]
    finally:
        code = daemon.stop()
    idle = {
        "vmrss_at_ready_kib": ready.get("VmRSS", 0),
        "after_start": fresh,
        "after_one_node": warm,
        "forward_sequences": forward,
        "exit_code": code,
    }
    print(
        f"  idle right after start: RSS median {mib(fresh['vmrss_median_kib'])}; after one node "
        f"went through the model: RSS median {mib(warm['vmrss_median_kib'])}, max "
        f"{mib(warm['vmrss_max_kib'])}; peak since start (VmHWM) {mib(warm['vmhwm_kib'])}; "
        f"{forward} text(s) through the model in all"
    )
    weights = _weights_kib(state / "models" / "smollm2-135m")
    print(f"  model weights on disk (float32 safetensors): {mib(weights)}")
    write_result("memory", {"threads": threads, "rebuild": rebuild, "daemon_idle": idle})


def sample_idle(pid: int, seconds: float) -> dict[str, float]:
    """VmRSS median and max, and VmHWM, sampled every 0.25 s for `seconds`."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(read_status_kib(pid))
        time.sleep(0.25)
    rss = [s["VmRSS"] for s in samples if "VmRSS" in s]
    return {
        "vmrss_median_kib": statistics.median(rss),
        "vmrss_max_kib": max(rss),
        "vmhwm_kib": max(s.get("VmHWM", 0) for s in samples),
    }


def _weights_kib(cache: Path) -> float:
    return sum(p.stat().st_size for p in cache.glob("*.safetensors")) / 1024


if __name__ == "__main__":
    main()
