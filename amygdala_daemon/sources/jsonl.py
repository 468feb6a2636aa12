"""JSONL memory source: one node per line; later lines win; `"deleted": true` is a tombstone."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amygdala_daemon.sources.base import Rejected, Snapshot, check_fields, storable_id

# File timestamps come from a coarse clock: a few ms on ext4, a whole second on some
# filesystems. A read this long after the mtime cannot share its tick with a later write.
SAME_TICK_NS = 2_000_000_000


@dataclass
class _Read:
    """What the last read parsed, to tell an append from a rewrite next time."""

    identity: tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
    read_at_ns: int  # wall clock when the bytes were read
    offset: int  # bytes parsed: through the last newline
    digest: bytes  # sha256 of those bytes
    lines: int  # how many lines they hold
    parsed: Snapshot  # the graph those lines describe
    returned: Snapshot  # the same with an unfinished last line, as last returned


class JsonlSource:
    """An append-friendly JSONL file.

    A last line without its newline that does not parse yet is being written: it is skipped
    now and read on a later poll, never taken as data.

    A poll re-parses only what was appended. If the file is the same one (device and inode)
    and its first `offset` bytes still hash to what was parsed, only the bytes after them
    are read as lines; anything else (a rewrite, a truncation, a new file) is read whole.
    An unchanged file (same size, mtime and ctime) is not read at all, provided it was read
    well after those times: a write in the same clock tick as the read could leave them alone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: _Read | None = None

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def snapshot(self) -> Snapshot:
        from amygdala_daemon.sources.errors import SourceError

        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                # ctime too: a writer can set the mtime back (touch -r, cp -p), never ctime.
                identity = (
                    stat.st_dev,
                    stat.st_ino,
                    stat.st_size,
                    stat.st_mtime_ns,
                    stat.st_ctime_ns,
                )
                last = self._last
                if (
                    last is not None
                    and last.identity == identity
                    and last.read_at_ns - max(stat.st_mtime_ns, stat.st_ctime_ns) > SAME_TICK_NS
                ):
                    return last.returned.copy()
                read_at_ns = time.time_ns()
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"cannot read jsonl source {self.path}: {exc.strerror}") from None
        parsed, start, lines = Snapshot(), 0, 0
        if last is not None and self._appended(last, identity, data):
            parsed, start, lines = last.parsed.copy(), last.offset, last.lines
        newline = data.rfind(b"\n", start)
        end = newline + 1 if newline >= 0 else start
        for line in data[start:end].split(b"\n")[:-1]:
            lines += 1
            self._take(parsed, line, lines, unfinished=False)
        returned = parsed
        if data[end:].strip():
            returned = parsed.copy()
            self._take(returned, data[end:], lines + 1, unfinished=True)
        digest = hashlib.sha256(data[:end]).digest()
        self._last = _Read(identity, read_at_ns, end, digest, lines, parsed, returned)
        return returned.copy()

    @staticmethod
    def _appended(last: _Read, identity: tuple[int, ...], data: bytes) -> bool:
        """The same file, with what was parsed last time unchanged at its start."""
        same_file = last.identity[:2] == identity[:2] and len(data) >= last.offset
        return same_file and hashlib.sha256(data[: last.offset]).digest() == last.digest

    def _take(self, snapshot: Snapshot, line: bytes, number: int, unfinished: bool) -> None:
        """Apply one line to `snapshot`: a node, a rejection, a tombstone or a problem."""
        if not line.strip():
            return
        where = f"{self.path.name}:{number}"
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if not unfinished:
                snapshot.problems.append(f"{where}: not valid JSON")
            return
        if isinstance(raw, dict) and raw.get("deleted") is True:
            node_id = raw.get("id")
            if isinstance(node_id, str):
                # The id the node is known by: a bad one was quarantined under its escape.
                snapshot.nodes.pop(storable_id(node_id), None)
                snapshot.rejected.pop(storable_id(node_id), None)
            else:
                snapshot.problems.append(f"{where}: tombstone without a string 'id'")
            return
        checked = check_fields(raw, where)
        if isinstance(checked, str):
            snapshot.problems.append(checked)
        elif isinstance(checked, Rejected):
            snapshot.nodes.pop(checked.id, None)
            snapshot.rejected[checked.id] = checked
        else:
            snapshot.rejected.pop(checked.id, None)
            snapshot.nodes[checked.id] = checked
