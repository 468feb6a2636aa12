"""Directory memory source: one node per `.md` or `.txt` file; the id is the relative path."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

from amygdala_daemon.sources.base import (
    MAX_TEXT_CHARS,
    Rejected,
    Snapshot,
    SourceNode,
    lone_surrogate,
    storable_id,
)

SUFFIXES = (".md", ".txt")


class DirectorySource:
    """A folder of text files.

    Hidden files and editor temporaries are skipped. A file modified within `settle_s` may
    be half-written: it counts as present (so it is not taken as deleted) but is read on a
    later poll.
    """

    def __init__(self, root: Path, settle_s: float = 1.0) -> None:
        self.root = root
        self.settle_s = settle_s

    def describe(self) -> str:
        return f"directory {self.root}"

    def snapshot(self) -> Snapshot:
        from amygdala_daemon.sources.errors import SourceError

        if not self.root.is_dir():
            raise SourceError(f"cannot read directory source {self.root}: not a directory")
        snapshot = Snapshot()
        now = time.time()
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if path.suffix not in SUFFIXES or any(p.startswith(".") for p in relative.parts):
                continue
            # A name that is not UTF-8 holds lone surrogates (os.fsdecode): escaped, it can
            # be stored, and it stays the same id from poll to poll.
            named = relative.as_posix()
            node_id = storable_id(named)
            try:
                stat = path.stat()
                if not path.is_file():
                    continue
                if now - stat.st_mtime < self.settle_s:
                    snapshot.pending.add(node_id)
                    continue
                data = path.read_bytes()
            except OSError as exc:
                # Vanished between listing and reading, or unreadable: try again next poll.
                snapshot.problems.append(f"{node_id}: {exc.strerror}")
                snapshot.pending.add(node_id)
                continue
            fingerprint = hashlib.sha256(data).hexdigest()
            at = lone_surrogate(named)
            if at is not None:
                reason = f"file name is not valid UTF-8 (lone surrogate at character {at})"
                snapshot.rejected[node_id] = Rejected(node_id, reason, fingerprint)
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 at byte {exc.start}"
                snapshot.rejected[node_id] = Rejected(node_id, reason, fingerprint)
                continue
            if len(text) > MAX_TEXT_CHARS:
                reason = f"text is {len(text)} characters, over the limit of {MAX_TEXT_CHARS}"
                snapshot.rejected[node_id] = Rejected(node_id, reason, fingerprint)
                continue
            updated = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
            snapshot.nodes[node_id] = SourceNode(node_id, text, None, updated)
        return snapshot
