"""The one error a store raises when the disk refuses a write: full, read-only or failing.

That is a state problem, not a bug: the user gets one line naming the file and the problem,
and what was kept, and exit code 1.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from amygdala_daemon.core.errors import AmygdalaError

# SQLite's result codes (and their extended forms) for a disk that refused a write.
_SQLITE_STORAGE = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")


class StateWriteError(AmygdalaError):
    """A file of the state directory (or a published copy) could not be written."""

    def kept(self, what: str) -> StateWriteError:
        """The same problem, saying what is still whole: `...: <what>`."""
        return StateWriteError(f"{self}: {what}")


def os_write_error(exc: OSError, path: Path | str) -> StateWriteError:
    """`no space left on device writing <path>`.

    >>> import errno
    >>> str(os_write_error(OSError(errno.EROFS, "Read-only file system"), "state/x"))
    'read-only file system writing state/x'
    """
    problem = exc.strerror or str(exc) or type(exc).__name__
    return StateWriteError(f"{problem[:1].lower()}{problem[1:]} writing {path}")


def sqlite_write_error(
    exc: sqlite3.Error, path: Path, doing: str = "writing"
) -> StateWriteError | None:
    """`exc` as one line naming the database, when the disk is what failed; None otherwise."""
    name = getattr(exc, "sqlite_errorname", "")
    if not name.startswith(_SQLITE_STORAGE):
        return None
    return StateWriteError(f"{exc} {doing} {path}")


# A file that is not a SQLite database, or one whose pages are damaged.
_SQLITE_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def sqlite_damaged_error(exc: sqlite3.Error, path: Path) -> AmygdalaError | None:
    """`exc` as one line saying what to do, when `path` is not a usable ledger; None otherwise.

    The file is never deleted: it may be all there is of the history, so the user decides.
    """
    name = getattr(exc, "sqlite_errorname", "")
    if not name.startswith(_SQLITE_DAMAGED):
        return None
    return AmygdalaError(
        f"{path} is not a valid ledger ({exc}); move it aside and run `amygdala-daemon rebuild`"
    )
