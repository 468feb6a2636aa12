"""One order over node ids, used everywhere a deterministic sample or split is needed.

The order is the sha256 of the node id: stable across runs, machines and Python versions, and
unrelated to a node's content, so a sample drawn by it is not biased by what the node says.
"""

from __future__ import annotations

import hashlib

N_FOLDS = 5
"""Held-out buckets for cross-validated quality figures."""


def sample_key(node_id: str) -> str:
    """Where a node falls in the sample order: lowest first.

    >>> sample_key("a") < sample_key("b")
    False
    >>> len(sample_key("journal/2026-01-02"))
    64
    """
    return hashlib.sha256(node_id.encode("utf-8")).hexdigest()


def held_out_bucket(node_id: str, n_folds: int = N_FOLDS) -> int:
    """The bucket a node is scored in: its sample key modulo `n_folds`.

    >>> held_out_bucket("a") == int(sample_key("a"), 16) % N_FOLDS
    True
    """
    return int(sample_key(node_id), 16) % n_folds
