"""SIGKILL the daemon at random instants; every restart must see exactly the committed changes."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import from_dict
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold, refold, stored_model_info
from tests.helpers.daemon import DaemonProcess, request, wait_for
from tests.helpers.folds import assert_same_fold
from tests.helpers.generations import check_generation
from tests.helpers.graphs import sample_nodes, write_jsonl

KILLS = 32


def phase_at_kill(log_text: str) -> str:
    """What the daemon was doing when it died: its last log line names the phase it began."""
    lines = [line for line in log_text.splitlines() if " INFO " in line]
    last = lines[-1] if lines else ""
    if "extracting" in last:
        return "ingesting"
    if 'Running job "Daemon.checkpoint' in last:
        return "checkpointing"
    if "publishing generation" in last:
        return "publishing"
    return "between phases"


def ready_count(daemon: DaemonProcess) -> int:
    return (
        daemon.log.read_text().count("INFO amygdala_daemon.serving.daemon: ready:")
        if daemon.log.exists()
        else 0
    )


def append(graph: Path, lines: list[dict[str, Any]]) -> None:
    with graph.open("a") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))


def check_state(daemon: DaemonProcess, config: Any) -> None:
    """After a crash: current is complete, and checkpoint + replay equals a full refold."""
    current = daemon.state / "published" / "current"
    if current.exists():
        check_generation(current)
    ledger_path = daemon.state / "ledger.sqlite3"
    if not ledger_path.exists():
        return
    ledger = Ledger(ledger_path, readonly=True)
    try:
        info = stored_model_info(ledger)
        if info is None:
            return
        shape = (len(info.layers), info.hidden_size)
        recovered = recover_fold(ledger, config, shape)
        scratch = refold(ledger, shape, config.labels)
        assert recovered.ledger_seq == ledger.seq
        if scratch.total.count:
            assert_same_fold(recovered, scratch)
        ids = [
            row[0]
            for row in ledger.conn.execute("SELECT node_id FROM entries WHERE removed_seq IS NULL")
        ]
        assert len(ids) == len(set(ids)), "a node is counted twice"
    finally:
        ledger.close()


# 32 daemon starts and SIGKILLs: about 160 s here.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_random_instants(tmp_path: Path, tiny_model_dir: Path) -> None:
    rng = random.Random(20261121)
    nodes = sample_nodes()
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        nodes[:40],
        daemon={"poll_interval": 0.05, "checkpoint_interval": 0.1},
        publish={"interval": "1s", "publish_after_s": 0.05, "keep": 3},
    )
    config = from_dict(
        json.loads(
            json.dumps(
                {
                    "state_dir": str(daemon.state),
                    "source": {"kind": "jsonl", "path": str(daemon.graph)},
                    "model": {"name": str(tiny_model_dir), "layers": [1, 2], "batch_size": 1},
                }
            )
        )
    )
    cursor = 40
    phases: dict[str, int] = {}
    live: dict[str, dict[str, Any]] = {n["id"]: n for n in nodes[:40]}
    try:
        for kill in range(KILLS):
            daemon.start()

            def restarted(kill: int = kill) -> bool:
                return ready_count(daemon) > kill

            wait_for(restarted, 120, "the daemon to be ready")
            # New nodes, an edit and a delete land while the daemon runs; it dies mid-flight.
            batch = nodes[cursor : cursor + 12]
            cursor += len(batch)
            edits = []
            if live:
                target = live[rng.choice(sorted(live))]
                content, _, tags = target["text"].rpartition("\n")
                edits.append({**target, "text": f"{content} (revised {kill})\n{tags}"})
            if kill % 3 == 0 and live:
                edits.append({"id": rng.choice(sorted(live)), "deleted": True})
            append(daemon.graph, batch + edits)
            for line in batch + edits:
                if line.get("deleted"):
                    live.pop(line["id"], None)
                else:
                    live[line["id"]] = line
            time.sleep(rng.uniform(0.0, 0.5))
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait()
            ready = "INFO amygdala_daemon.serving.daemon: ready:"
            run_log = daemon.log.read_text().rsplit(ready, 1)[-1]
            phases[phase_at_kill(run_log)] = phases.get(phase_at_kill(run_log), 0) + 1
            check_state(daemon, config)
        # One last clean pass, then the whole state against a from-scratch rebuild.
        daemon.start()
        wait_for(lambda: ready_count(daemon) > KILLS, 120, "the final start")
        client = daemon.client()
        wait_for(
            lambda: request(client, {"op": "status"})["status"]["backlog"] == 0, 60, "no backlog"
        )
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    check_state(daemon, config)
    print(f"SIGKILLs by phase: {phases}")
    assert sum(phases.values()) == KILLS

    final_graph = write_jsonl(tmp_path / "final.jsonl", list(live.values()))
    fresh_config = from_dict(
        {
            "state_dir": str(tmp_path / "fresh"),
            "source": {"kind": "jsonl", "path": str(final_graph)},
            "model": {"name": str(tiny_model_dir), "layers": [1, 2], "batch_size": 1},
        }
    )
    fresh = Engine(fresh_config)
    try:
        fresh.rebuild(open_source(fresh_config.source))
        assert fresh.fold is not None
        ledger = Ledger(daemon.state / "ledger.sqlite3", readonly=True)
        try:
            recovered = recover_fold(ledger, config, fresh.fold.shape)
            stored = {
                row[0]
                for row in ledger.conn.execute(
                    "SELECT node_id FROM entries WHERE removed_seq IS NULL"
                )
            }
        finally:
            ledger.close()
        assert fresh.fold is not None
        assert_same_fold(recovered, fresh.fold)
        expected = {
            i
            for i, n in live.items()
            if isinstance(n["text"], str)
            and parse_text(n["text"]).tags
            and parse_text(n["text"]).content
        }
        assert stored == expected, "no node missing, none extra"
    finally:
        fresh.close()
