"""Where everything lives inside a state directory: one object, so no module spells a name.

<state_dir>/ledger.sqlite3        the source of truth (SQLite, WAL)
<state_dir>/accumulators.npz      the fold's checkpoint
<state_dir>/writer.lock           the one-writer lock
<state_dir>/models/               converted copies of bundled models
<state_dir>/published/            generations and the `current` symlink
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    """The files of one state directory.

    >>> StatePaths(Path("state")).ledger.as_posix()
    'state/ledger.sqlite3'
    >>> StatePaths(Path("state")).current.as_posix()
    'state/published/current'
    """

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite3"

    @property
    def staged_ledger(self) -> Path:
        """Where a full `rebuild` builds the new ledger before it replaces the old one."""
        return self.root / "ledger.rebuild.sqlite3"

    @property
    def checkpoint(self) -> Path:
        return self.root / "accumulators.npz"

    @property
    def lock(self) -> Path:
        return self.root / "writer.lock"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def published(self) -> Path:
        return self.root / "published"

    @property
    def current(self) -> Path:
        return self.published / "current"
