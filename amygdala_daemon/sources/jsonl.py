"""JSONL memory source: one node per line; later lines win; `"deleted": true` is a tombstone."""

from __future__ import annotations

import json
from pathlib import Path

from amygdala_daemon.sources.base import Rejected, Snapshot, check_fields


class JsonlSource:
    """An append-friendly JSONL file.

    A last line without its newline that does not parse yet is being written: it is skipped
    now and read on a later poll, never taken as data.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def snapshot(self) -> Snapshot:
        from amygdala_daemon.sources import SourceError

        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read jsonl source {self.path}: {exc.strerror}") from None
        snapshot = Snapshot()
        lines = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            is_unfinished = number == len(lines)  # no newline after it
            where = f"{self.path.name}:{number}"
            try:
                raw = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if not is_unfinished:
                    snapshot.problems.append(f"{where}: not valid JSON")
                continue
            if isinstance(raw, dict) and raw.get("deleted") is True:
                node_id = raw.get("id")
                if isinstance(node_id, str):
                    snapshot.nodes.pop(node_id, None)
                    snapshot.rejected.pop(node_id, None)
                else:
                    snapshot.problems.append(f"{where}: tombstone without a string 'id'")
                continue
            checked = check_fields(raw, where)
            if isinstance(checked, str):
                snapshot.problems.append(checked)
            elif isinstance(checked, Rejected):
                snapshot.nodes.pop(checked.id, None)
                snapshot.rejected[checked.id] = checked
            else:
                snapshot.rejected.pop(checked.id, None)
                snapshot.nodes[checked.id] = checked
        return snapshot
