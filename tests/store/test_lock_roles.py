"""The writer lock says whether its holder is the daemon, so `publish` knows whom to ask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from amygdala_daemon.store.lock import Holder, StateLock, lock_holder, lock_owner

# Takes the lock, marks itself the daemon when told to, and holds on until stdin closes.
HOLDER = """
import sys
from pathlib import Path
from amygdala_daemon.store.lock import StateLock
lock = StateLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
if sys.stdin.readline() == "daemon\\n":
    lock.mark_daemon()
    print("marked", flush=True)
sys.stdin.readline()
"""


def test_a_cli_writer_and_the_daemon_are_told_apart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdin is not None and holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            assert lock_owner(state) == Holder(holder.pid, daemon=False)
            holder.stdin.write("daemon\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "marked\n"
            assert lock_owner(state) == Holder(holder.pid, daemon=True)
            assert lock_holder(state) == holder.pid, "the pid reads as before"
        finally:
            holder.kill()
    assert lock_owner(state) is None, "a dead daemon holds nothing"
    with StateLock(state) as mine:
        assert lock_owner(state) == Holder(os.getpid(), daemon=False), "the old role is gone"
        assert mine.path.read_text() == f"{os.getpid()}\n"
