"""What moves through the ledger: writes going in, and the entries and changes the fold reads.

Plain data, so the fold can be computed and tested without SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Entry:
    """One applied version of a node."""

    entry_id: int
    node_id: str
    tags: dict[str, float]
    content: str
    activations: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Change:
    """One step of the fold: +1 adds an entry, -1 retracts it."""

    seq: int
    sign: int
    entry: Entry


@dataclass(frozen=True)
class StoreEntry:
    """Write: apply this version of a node (retracting any older one)."""

    node_id: str
    hash: str
    kind: str | None
    updated_at: str | None
    tags: dict[str, float]
    content: str
    malformed: int
    activations: npt.NDArray[np.float32]
    n_tokens: int
    truncated: bool


@dataclass(frozen=True)
class SetStatus:
    """Write: the node exists but contributes nothing (ineligible or quarantined)."""

    node_id: str
    hash: str
    status: str
    reason: str
    kind: str | None = None
    updated_at: str | None = None
    malformed: int = 0


@dataclass(frozen=True)
class DeleteNode:
    """Write: the node is gone from the source."""

    node_id: str


Write = StoreEntry | SetStatus | DeleteNode
