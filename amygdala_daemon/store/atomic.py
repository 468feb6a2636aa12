"""Durable file writes: every file the project writes goes through these.

A file is written beside its target, flushed and fsynced, then renamed over it, and the
directory is fsynced so the rename itself survives a power cut. Nothing is ever written in
place: a reader that has the old inode open or mmapped keeps a valid file.

A write the disk refuses (full, read-only) raises `StateWriteError` naming the file, and
leaves no half-written file behind to hold the space. A process killed mid-write does leave
its temporary file: the writer removes those when it opens the state directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from amygdala_daemon.store.errors import os_write_error

# The temporary names this project writes: `.<name>.tmp-<pid>` (replace_with, and the
# `current` symlink's swap) and `.gen-<n>.partial/` (a generation being written).
_LEFTOVER = re.compile(r"^\..+\.tmp-\d+$|^\.gen-\d{6,}\.partial$")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a new file at `path` and fsync it (the caller renames it into place)."""
    write_with(path, lambda handle: handle.write(data), mode)


def write_with(path: Path, write: Callable[[BinaryIO], object], mode: int = 0o644) -> None:
    """`write_file` for writers that stream into a handle (such as `numpy.savez`)."""
    try:
        _write(path, write, mode)
    except OSError as exc:
        # Leave nothing half-written holding the space; a read-only mount refuses even that.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        # A write that fails on a full disk names no file: name it here.
        raise os_write_error(exc, path) from None


def _write(path: Path, write: Callable[[BinaryIO], object], mode: int) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)


def replace_with(target: Path, write: Callable[[BinaryIO], object], mode: int = 0o644) -> None:
    """Replace `target` atomically with what `write` puts into a fresh file beside it."""
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(temp, write, mode)
        os.replace(temp, target)
        fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            # Named for the file being replaced: the temporary name means nothing to a user.
            raise os_write_error(exc, target) from None
        raise


def replace_file(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `target` atomically with `data`: never an in-place write."""
    replace_with(target, lambda handle: handle.write(data), mode)


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in `directory`; the removed paths.

    Only names this project writes are touched. Call it holding the writer lock: no other
    process can be writing them then.
    """
    removed: list[Path] = []
    try:
        found = [path for path in directory.iterdir() if _LEFTOVER.match(path.name)]
    except FileNotFoundError:
        return removed
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed
