"""A running daemon meets a graph file that reads as empty: it holds, reports, keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, next_event, request, wait_for
from tests.helpers.graphs import sample_nodes, write_jsonl
from tests.helpers.notify_socket import NotifyListener

# A real daemon subprocess.
pytestmark = pytest.mark.slow


def test_a_held_mass_delete_is_reported_and_confirmed_over_the_websocket(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()[:60]
    listener = NotifyListener(tmp_path / "notify.sock")
    daemon = DaemonProcess(tmp_path, tiny_model_dir, nodes).start(listener.env)
    daemons.append(daemon)
    try:
        client = daemon.client()
        generation = wait_for(daemon.generation, what="the first generation")
        wait_for(lambda: request(client, {"op": "status"})["status"]["backlog"] == 0)
        before = request(client, {"op": "status"})["status"]
        assert before["held"] is None

        # The file is emptied, as a program rewriting it would leave it for a moment.
        write_jsonl(daemon.graph, [])
        event = next_event(client, "delete_held")
        assert event["deletes"] == 60 and event["live"] == 60 and event["source_empty"]
        # Polls go on (every 0.1 s), and the hold stays reported in STATUS=.
        listener.polls(5, lambda line: "mass delete held: 60 of 60 nodes" in line)
        held = request(client, {"op": "status"})["status"]
        assert held["held"]["key"] == event["key"]
        for key in ("generation", "ledger_seq", "nodes", "concepts"):
            assert held[key] == before[key], key
        # Still serving: a forced publish goes through, from the unchanged fold.
        published = request(client, {"op": "publish", "force": True})
        assert published["ok"] and published["generation"] == generation + 1
        log = daemon.log.read_text()
        assert log.count("mass delete held") == 1, log

        # A wrong key is refused; the right one applies the deletes.
        wrong = request(client, {"op": "confirm_delete", "key": "not-it"})
        assert wrong["ok"] is False and event["key"] in wrong["error"]
        reply = request(client, {"op": "confirm_delete", "key": event["key"]})
        assert reply["ok"] and reply["confirmed"]["deletes"] == 60 and reply["held"] is None
        emptied = request(client, {"op": "status"})["status"]
        assert emptied["nodes"] == {"applied": 0, "quarantined": 0, "ineligible": 0}
        assert request(client, {"op": "confirm_delete"})["ok"] is False  # nothing held now

        # Swapped back: no forward pass.
        passes = emptied["daemon"]["forward_sequences"]
        write_jsonl(daemon.graph, nodes)
        wait_for(
            lambda: request(client, {"op": "status"})["status"]["nodes"] == before["nodes"],
            what="the nodes back",
        )
        back = request(client, {"op": "status"})["status"]
        assert back["daemon"]["forward_sequences"] == passes
        assert back["concepts"] == before["concepts"]
        assert back["held"] is None
    finally:
        listener.close()
