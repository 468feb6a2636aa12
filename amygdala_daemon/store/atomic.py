"""Durable file writes: every file the project writes goes through these.

A file is written beside its target, flushed and fsynced, then renamed over it, and the
directory is fsynced so the rename itself survives a power cut. Nothing is ever written in
place: a reader that has the old inode open or mmapped keeps a valid file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)


def replace_with(target: Path, write: Callable[[BinaryIO], object], mode: int = 0o644) -> None:
    """Replace `target` atomically with what `write` puts into a fresh file beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write_with(temp, write, mode)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def replace_file(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `target` atomically with `data`: never an in-place write."""
    replace_with(target, lambda handle: handle.write(data), mode)
