"""What a running daemon logs: a lasting source problem once per change, not once per poll; no
line per scheduled job."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from amygdala_daemon.cli.main import main
from tests.helpers.daemon import DaemonProcess, wait_for
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


@pytest.mark.slow
def test_scheduled_jobs_are_not_logged_at_the_default_verbosity(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(
        tmp_path, tiny_model_dir, sample_nodes()[:10], daemon={"checkpoint_interval": 0.1}
    )
    daemons.append(daemon)
    daemon.start()
    # Only the scheduled checkpoint job writes the checkpoint while the daemon runs.
    wait_for(lambda: (daemon.state / "accumulators.npz").exists(), what="a scheduled checkpoint")
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "ready: polling" in log
    for scheduler_line in ("Running job", "executed successfully", "apscheduler"):
        assert not lines_with(log, scheduler_line), log


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["-v"], logging.DEBUG)])
def test_verbose_shows_the_scheduler_at_debug(tmp_path: Path, flags: list[str], level: int) -> None:
    scheduler = logging.getLogger("apscheduler")
    kept = scheduler.level
    try:
        assert main([*flags, "--state-dir", str(tmp_path / "state"), "status", "--json"]) == 0
        assert scheduler.getEffectiveLevel() == level
    finally:
        scheduler.setLevel(kept)
