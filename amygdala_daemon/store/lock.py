"""One writer per state directory, enforced by an OS file lock that names its holder.

The lock is an open file description lock (Linux `F_OFD_SETLK`) on the whole of
`<state_dir>/writer.lock`. Unlike `flock`, such a lock can be tested without being taken
(`F_OFD_GETLK`), so read-only commands ask who holds it and never hold it themselves, not even
for an instant in which a writer starting up would find it taken. Unlike a classic POSIX
lock, closing some other descriptor of the file in the same process does not release it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from amygdala_daemon.core.errors import LockedError
from amygdala_daemon.core.paths import StatePaths

# struct flock: l_type, l_whence, l_start, l_len, l_pid, padded as the kernel lays it out.
_FLOCK = "hhqqi4x"


def _whole_file(kind: int) -> bytes:
    """A `struct flock` for the whole file; l_pid must be 0 for open file description locks."""
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)


DAEMON = "daemon"
"""The role a running `run` records: it answers `publish` on its websocket."""


@dataclass(frozen=True)
class Holder:
    """Who holds the writer lock: a pid (-1 before it is written) and whether it is the daemon."""

    pid: int
    daemon: bool


def _recorded(descriptor: int) -> Holder:
    # The file holds the pid on its first line and, for the daemon, its role on the second.
    lines = os.pread(descriptor, 64, 0).decode(errors="replace").split()
    pid = int(lines[0]) if lines and lines[0].isdigit() else -1
    return Holder(pid, lines[1:2] == [DAEMON])


def _recorded_pid(descriptor: int) -> str:
    pid = _recorded(descriptor).pid
    return str(pid) if pid >= 0 else ""


def lock_owner(state_dir: Path) -> Holder | None:
    """Who holds the writer lock, or None when nobody does. Only asks: never takes it."""
    path = StatePaths(state_dir).lock
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        answer = fcntl.fcntl(descriptor, fcntl.F_OFD_GETLK, _whole_file(fcntl.F_RDLCK))
        if struct.unpack(_FLOCK, answer)[0] == fcntl.F_UNLCK:
            return None
        return _recorded(descriptor)
    finally:
        os.close(descriptor)


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the writer lock, or None when nobody does.

    Only asks: the lock is never taken here. -1 when it is held but the holder has not
    written its pid yet.
    """
    owner = lock_owner(state_dir)
    return None if owner is None else owner.pid


class StateLock:
    """An exclusive lock on `<state_dir>/writer.lock`, released when the process dies.

    The kernel drops the lock on exit, SIGKILL included, so a crash never leaves it stale.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = StatePaths(state_dir).lock
        self.descriptor: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.fcntl(descriptor, fcntl.F_OFD_SETLK, _whole_file(fcntl.F_WRLCK))
        except OSError as exc:
            holder = _recorded_pid(descriptor) or "unknown"
            os.close(descriptor)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise LockedError(
                f"state directory {self.path.parent} is in use by another amygdala-daemon "
                f"writer (pid {holder}); stop it first, or use read-only commands "
                "(status, probe, report)"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self.descriptor = descriptor
        return self

    def mark_daemon(self) -> None:
        """Record that the holder is the daemon, so CLI writers ask it rather than wait."""
        assert self.descriptor is not None, "only a holder says who it is"
        os.pwrite(self.descriptor, f"{os.getpid()}\n{DAEMON}\n".encode(), 0)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
