"""A daemon killed with work half done finishes it when it starts again, not an interval later."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.reader import ReadoutWatcher, load_readout
from amygdala_daemon.sources import open_source
from amygdala_daemon.store.ledger import Ledger
from tests.helpers.daemon import DaemonProcess, request, wait_for
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl


def recorded(daemon: DaemonProcess) -> set[str]:
    """Node ids the daemon's ledger has recorded (applied, ineligible or quarantined)."""
    path = daemon.state / "ledger.sqlite3"
    if not path.exists():
        return set()
    ledger = Ledger(path, readonly=True)
    try:
        return set(ledger.known_hashes())
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_debounced_publish_a_sigkill_cut_short_happens_soon_after_restart(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()[:90]
    # A debounce far longer than the test: changes are applied and their publish waits.
    daemon = DaemonProcess(tmp_path, tiny_model_dir, nodes[:60], publish={"publish_after_s": 3600})
    daemons.append(daemon)
    daemon.start()
    client = daemon.client()
    wait_for(lambda: recorded(daemon) == {n["id"] for n in nodes[:60]}, 120, "the first nodes")
    reply = request(client, {"op": "publish"})
    assert reply["ok"] and reply["generation"] == 1, reply
    write_jsonl(daemon.graph, nodes)
    wait_for(lambda: recorded(daemon) == {n["id"] for n in nodes}, 120, "the new nodes")
    daemon.stop(signal.SIGKILL)
    assert daemon.generation() == 1, "killed before the debounced publish"
    ledger = Ledger(daemon.state / "ledger.sqlite3", readonly=True)
    try:
        ledger_seq = ledger.seq
    finally:
        ledger.close()

    # Restarted with the debounce configured, and nothing new in the graph.
    daemon.config.write_text(
        daemon.config.read_text().replace("publish_after_s = 3600", "publish_after_s = 0.2")
    )
    daemon.start()
    wait_for(lambda: daemon.generation() == 2, 60, "the publish the debounce owed")
    readout = load_readout(daemon.state / "published/current")
    assert readout.manifest["ledger_seq"] == ledger_seq
    assert daemon.stop() == 0


@pytest.mark.slow
def test_flat_copies_left_apart_are_repaired_when_the_daemon_starts(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    flat_vectors, flat_manifest = tmp_path / "vllm/readout.safetensors", tmp_path / "vllm/m.json"
    flat = {"vectors_path": str(flat_vectors), "manifest_path": str(flat_manifest)}
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes(), publish=flat)
    daemons.append(daemon)
    config = make_config(daemon.state, daemon.graph, tiny_model_dir, publish=flat)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        engine.publish(force=True)
    finally:
        engine.close()
    published = daemon.state / "published"
    # What a SIGKILL between the two renames leaves: new vectors, the previous manifest.
    flat_manifest.write_bytes((published / "gen-000001/manifest.json").read_bytes())
    assert ReadoutWatcher(flat_vectors, flat_manifest).current is None, "torn: nothing loads"

    daemon.start()
    readout = wait_for(
        lambda: ReadoutWatcher(flat_vectors, flat_manifest).current, 60, "the flat copies"
    )
    assert readout.generation == 2
    assert daemon.generation() == 2, "repaired, not republished"
    assert json.loads(flat_manifest.read_text())["generation"] == 2
    assert daemon.stop() == 0
