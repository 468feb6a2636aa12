"""Writes the disk refuses, and what a killed writer leaves: on real mounts and processes.

A full disk is a small tmpfs filled to the last byte; a read-only state directory is that
tmpfs remounted read-only (`chmod` does not stop root). Both need root and `mount`: without
them these tests are skipped, saying so.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.store.atomic import remove_leftovers, replace_file
from amygdala_daemon.store.errors import StateWriteError
from tests.helpers.cli import one_error_line
from tests.helpers.daemon import DaemonProcess, next_event, request, wait_for
from tests.helpers.generations import check_generation
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return subprocess.CompletedProcess(["mount"], 127, "", "no `mount` command")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk))
    if mounted.returncode != 0:
        pytest.skip(f"needs root and tmpfs: `mount -t tmpfs` failed: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; the file (remove it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while handle.write(b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    assert os.statvfs(disk).f_bavail == 0
    return filler


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in paths}


def test_leftover_temporary_files_go_when_the_writer_opens(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    state = tmp_path / "state"
    published = state / "published"
    (published / "gen-000001").mkdir(parents=True)
    os.symlink("gen-000001", published / "current")
    leftovers = [
        state / ".accumulators.npz.tmp-4242",
        published / ".current.tmp-4242",
        published / ".gen-000002.partial",
    ]
    leftovers[0].write_bytes(b"half a checkpoint")
    os.symlink("gen-000001", leftovers[1])
    leftovers[2].mkdir()
    (leftovers[2] / "vectors.safetensors").write_bytes(b"half a generation")
    # Names the project does not write stay: they are someone else's.
    others = [
        state / "notes.txt",
        state / "accumulators.npz.tmp",
        state / ".accumulators.npz.tmp-mine",
        published / ".current.tmp",
        published / ".gen-2.partial",
    ]
    for other in others:
        other.write_text("keep me")

    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes()[:5])
    engine = Engine(make_config(state, graph, tiny_model_dir))
    engine.close()
    assert [path for path in leftovers if os.path.lexists(path)] == []
    assert all(other.read_text() == "keep me" for other in others)
    assert os.readlink(published / "current") == "gen-000001"
    assert remove_leftovers(tmp_path / "missing") == []


def test_a_refused_write_names_the_file_and_leaves_the_old_one(small_disk: Path) -> None:
    target = small_disk / "state" / "accumulators.npz"
    replace_file(target, b"the previous checkpoint")
    filler = fill(small_disk)
    with pytest.raises(StateWriteError) as refused:
        replace_file(target, b"x" * (1 << 20))
    assert str(refused.value) == f"no space left on device writing {target}"
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in target.parent.iterdir()) == ["accumulators.npz"]
    filler.unlink()
    replace_file(target, b"the next checkpoint")
    assert target.read_bytes() == b"the next checkpoint"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_full_disk_refuses_a_publish_and_the_daemon_carries_on(
    tmp_path: Path, tiny_model_dir: Path, small_disk: Path, daemons: list[DaemonProcess]
) -> None:
    state = small_disk / "state"
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:40], state_dir=str(state))
    daemons.append(daemon)
    current = state / "published" / "current"
    checkpoint = state / "accumulators.npz"
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(60)
        daemon.start(env={"NOTIFY_SOCKET": str(notify_path)})
        client = daemon.client()
        wait_for(lambda: (current / "manifest.json").exists(), what="the first generation")
        wait_for(checkpoint.exists, what="the first checkpoint")
        kept = [checkpoint, state / "ledger.sqlite3", state / "ledger.sqlite3-wal"]
        before = snapshot(kept)
        filler = fill(small_disk)

        # Idle polls on a full disk write nothing, so nothing fails.
        polls = 0
        while polls < 10:
            if listener.recv(4096).decode().startswith("STATUS=backlog 0"):
                polls += 1
    # Closed now: a listener that stops reading would block the daemon's next notification.
    assert daemon.process is not None and daemon.process.poll() is None
    assert snapshot(kept) == before

    refused = cli("--config", daemon.config, "publish", "--force")
    assert refused.returncode == 1, refused.stdout
    line = one_error_line(refused)
    assert "no space left on device writing " + str(state / "published") in line, line
    assert line.endswith("generation 1 is still current"), line
    assert "no space left on device" in next_event(client, "error")["error"]
    assert daemon.process.poll() is None
    assert os.readlink(current) == "gen-000001"
    assert check_generation(current)["generation"] == 1
    assert snapshot(kept) == before
    np.load(checkpoint)  # still a whole checkpoint

    # Space is back: the next change is ingested and published as usual.
    filler.unlink()
    with daemon.graph.open("a") as handle:
        fresh = {"id": "fresh", "text": "A quiet, easy morning after the storm passed.\ncalm:9"}
        handle.write(json.dumps(fresh) + "\n")
    assert next_event(client, "published")["generation"] == 2
    assert check_generation(current)["generation"] == 2
    assert request(client, {"op": "status"})["status"]["ledger_seq"] > 0
    assert daemon.stop() == 0


def read_only_commands(config: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    commands = [
        ["run", "--once"],
        ["run"],
        ["rebuild"],
        ["rebuild", "--from-cache"],
        ["publish", "--force"],
        ["rollback", "1"],
    ]
    return {" ".join(c): cli("--config", config, *c, timeout=120) for c in commands}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_read_only_state_directory_is_one_line_per_command(
    tmp_path: Path, tiny_model_dir: Path, small_disk: Path
) -> None:
    state = small_disk / "state"
    daemon = DaemonProcess(tmp_path, tiny_model_dir, sample_nodes()[:30], state_dir=str(state))
    first = cli("--config", daemon.config, "run", "--once")
    assert first.returncode == 0, first.stderr
    files = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    remounted = mount("-o", "remount,ro", str(small_disk))
    if remounted.returncode != 0:
        pytest.skip(f"needs a read-only remount: `mount -o remount,ro` failed: {remounted.stderr}")

    for command, result in read_only_commands(daemon.config).items():
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        line = one_error_line(result)
        assert str(state) in line and "read-only file system" in line.lower(), (command, line)
    # Reading needs no write: the read-only commands still work.
    status = cli("--config", daemon.config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["generation"] == 1
    assert sorted(str(p.relative_to(state)) for p in state.rglob("*")) == files
    with pytest.raises(AmygdalaError, match="read-only file system writing"):
        Engine(make_config(state, daemon.graph, tiny_model_dir))
