"""lock.py: one writer per state directory, across real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amygdala_daemon.core.errors import LockedError
from amygdala_daemon.store.lock import StateLock, lock_holder

# A second process that takes the lock, says so, and lets go when told (or dies holding it).
HOLDER = """
import sys
from pathlib import Path
from amygdala_daemon.store.lock import StateLock

lock = StateLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
for line in sys.stdin:
    if line.strip() == "release":
        lock.release()
        print("released", flush=True)
"""

# A second process that tries to become the writer and reports what it was told.
CONTENDER = """
import sys
from pathlib import Path
from amygdala_daemon.core.errors import LockedError
from amygdala_daemon.store.lock import StateLock

try:
    StateLock(Path(sys.argv[1])).acquire()
except LockedError as refused:
    print(refused)
    raise SystemExit(refused.exit_code)
print("acquired")
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "locked\n"
            yield process
        finally:
            process.kill()


def contend(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CONTENDER, str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_writer_is_told_the_holders_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state):
        refused = contend(state)
        assert refused.returncode == 1, refused.stderr
        assert f"(pid {os.getpid()})" in refused.stdout
        assert f"state directory {state} is in use" in refused.stdout
        assert "read-only commands" in refused.stdout
        assert lock_holder(state) == os.getpid()
    acquired = contend(state)
    assert acquired.returncode == 0 and acquired.stdout == "acquired\n", acquired.stderr


def test_the_holder_is_named_until_it_releases(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    assert lock_holder(state) == holder.pid
    with pytest.raises(LockedError, match=rf"\(pid {holder.pid}\)") as refused:
        StateLock(state).acquire()
    assert refused.value.exit_code == 1
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("release\n")
    holder.stdin.flush()
    assert holder.stdout.readline() == "released\n"
    assert holder.poll() is None, "the process lives on; only the lock is gone"
    assert lock_holder(state) is None
    with StateLock(state) as mine:
        assert lock_holder(state) == os.getpid()
        assert mine.path.read_text() == f"{os.getpid()}\n", "the pid replaces the old one"
    assert lock_holder(state) is None


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    assert lock_holder(state) == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock_holder(state) is None
    StateLock(state).acquire().release()


def test_no_lock_file_means_no_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert lock_holder(state) is None
    assert not state.exists(), "asking creates nothing"
    lock = StateLock(state)
    lock.release()  # releasing what was never taken is harmless
    lock.acquire()
    lock.release()
    lock.release()
    assert lock_holder(state) is None


# A read-only `status`, over and over until told to stop.
STATUS_LOOP = """
import sys
from pathlib import Path
from amygdala_daemon.core.config import from_dict
from amygdala_daemon.views.status import status_report

state, graph, stop = sys.argv[1:]
config = from_dict({"state_dir": state, "source": {"kind": "jsonl", "path": graph}})
print("probing", flush=True)
while not Path(stop).exists():
    status_report(config)
"""

# A writer that starts (takes the lock) and stops, `attempts` times; prints how often it failed.
WRITER_LOOP = """
import sys
import time
from pathlib import Path
from amygdala_daemon.core.errors import LockedError
from amygdala_daemon.store.lock import StateLock

failed = []
for attempt in range(int(sys.argv[2])):
    try:
        StateLock(Path(sys.argv[1])).acquire().release()
    except LockedError as refused:
        failed.append(str(refused))
    time.sleep(0.002)  # spread the starts over the readers' run
print(len(failed), failed[:1], flush=True)
"""


@pytest.mark.slow
def test_status_never_makes_a_starting_writer_fail(tmp_path: Path) -> None:
    state, stop = tmp_path / "state", tmp_path / "stop"
    graph = tmp_path / "graph.jsonl"
    node = {"id": "a", "text": "A node long enough to count as content here.\njoy:9"}
    graph.write_text(json.dumps(node) + "\n")
    StateLock(state).acquire().release()
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", STATUS_LOOP, str(state), str(graph), str(stop)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            for _ in range(3)
        ]
        stack.callback(stop.touch)
        for probe in probes:
            assert probe.stdout is not None and probe.stdout.readline() == "probing\n"
        writer = subprocess.run(
            [sys.executable, "-c", WRITER_LOOP, str(state), "300"],
            capture_output=True,
            text=True,
            timeout=100,
        )
    assert writer.returncode == 0, writer.stderr
    assert writer.stdout.startswith("0 "), f"writers refused because of a reader: {writer.stdout}"
    assert all(probe.returncode == 0 for probe in probes), "every status ran cleanly"
