"""The mass-delete guard: a sync that would delete too much of the graph waits for a yes.

A source that reads as empty, or lost most of its lines, is far more often a file caught
mid-rewrite or a wrong path than a real clean-out. Such a sync is held whole: nothing in it is
applied, since its adds and edits come from the same suspect read. rsync's `--max-delete`
is the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

CONFIRM_HOW = (
    "confirm with `amygdala-daemon run --once --confirm-delete`, the websocket request "
    '{"op": "confirm_delete"}, or raise source.max_delete_fraction and reload (SIGHUP)'
)


@dataclass(frozen=True)
class DeleteHold:
    """A sync held back: what it would have deleted, out of how many live nodes."""

    deletes: int
    live: int
    upserts: int
    max_delete_fraction: float
    source_empty: bool
    key: str
    """Names this exact set of deletes: a confirmation applies to it, and to no other."""

    def message(self, how: str = CONFIRM_HOW) -> str:
        why = (
            "the source reads as empty"
            if self.source_empty
            else f"more than source.max_delete_fraction = {self.max_delete_fraction:g}"
        )
        return (
            f"mass delete held: the sync would delete {self.deletes} of {self.live} nodes "
            f"({why}); nothing was applied; {how}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "deletes": self.deletes,
            "live": self.live,
            "upserts": self.upserts,
            "max_delete_fraction": self.max_delete_fraction,
            "source_empty": self.source_empty,
            "key": self.key,
            "confirm": CONFIRM_HOW,
        }


def hold_key(deletes: list[str]) -> str:
    """A short digest of the delete set, order aside."""
    digest = hashlib.sha256("\x00".join(sorted(deletes)).encode("utf-8"))
    return digest.hexdigest()[:16]


def check_deletes(
    deletes: list[str],
    live: int,
    upserts: int,
    max_delete_fraction: float,
    source_empty: bool,
) -> DeleteHold | None:
    """The hold for a sync, or None when it may be applied.

    An empty source with nodes in the ledger is held whatever the fraction (1.0 turns the
    fraction check off, not this one).

    >>> check_deletes(["a"], 10, 0, 0.5, False) is None
    True
    >>> check_deletes(list("abcdef"), 10, 0, 0.5, False).deletes
    6
    >>> check_deletes(list("ab"), 2, 0, 1.0, True).source_empty
    True
    """
    if not deletes or live == 0:
        return None
    empty = source_empty and upserts == 0
    if not empty and len(deletes) <= max_delete_fraction * live:
        return None
    return DeleteHold(len(deletes), live, upserts, max_delete_fraction, empty, hold_key(deletes))
