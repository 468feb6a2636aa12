"""One writer per state directory, enforced by an OS file lock that names its holder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from amygdala_daemon.core.errors import LockedError
from amygdala_daemon.core.paths import StatePaths


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the writer lock, or None when nobody does."""
    path = StatePaths(state_dir).lock
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(descriptor, 64, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(descriptor)
    return None


class StateLock:
    """An exclusive `flock` on `<state_dir>/writer.lock`, released when the process dies.

    The kernel drops the lock on exit, SIGKILL included, so a crash never leaves it stale.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = StatePaths(state_dir).lock
        self.descriptor: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise LockedError(
                f"state directory {self.path.parent} is in use by another amygdala-daemon "
                f"writer (pid {holder}); stop it first, or use read-only commands "
                "(status, probe, report)"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self.descriptor = descriptor
        return self

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
