"""What a running daemon logs about a lasting source problem: once per change, not once per poll."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess
from tests.helpers.graphs import sample_nodes
from tests.helpers.notify_socket import NotifyListener

POLLS = 6


def lines_with(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


@pytest.mark.slow
def test_a_lasting_source_error_or_problem_is_logged_once_per_change(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:20])
    with daemon.graph.open("a") as handle:
        handle.write("{this line is not json\n")
    listener = NotifyListener(tmp_path / "notify.sock")
    daemons.append(daemon)
    try:
        daemon.start(env=listener.env)
        listener.polls(POLLS, lambda status: status.startswith("backlog 0"))
        kept = daemon.graph.read_bytes()
        daemon.graph.unlink()
        listener.polls(POLLS, lambda status: "No such file" in status)
        daemon.graph.mkdir()  # the same source, failing another way
        listener.polls(POLLS, lambda status: "Is a directory" in status)
        daemon.graph.rmdir()
        daemon.graph.write_bytes(kept)
        listener.polls(POLLS, lambda status: status.startswith("backlog 0"))
        assert daemon.stop() == 0
    finally:
        listener.close()
    log = daemon.log.read_text()
    problems = lines_with(log, "source problem:")
    assert len(problems) == 1, problems
    assert problems[0].endswith("graph.jsonl:21: not valid JSON")
    errors = lines_with(log, "source error:")
    assert len(errors) == 2, errors
    assert errors[0].endswith("No such file or directory")
    assert errors[1].endswith("Is a directory")
    assert len(lines_with(log, "source recovered")) == 1
