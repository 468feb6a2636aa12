"""The fold's checkpoint: an `.npz` written atomically, stamped with the ledger sequence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.fold import Accumulators, fold_fingerprint
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.store.atomic import replace_with


def _stack(welfords: list[Welford], shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    counts = np.array([w.count for w in welfords], np.int64)
    if not welfords:
        empty = np.zeros((0, *shape), np.float64)
        return counts, empty, empty
    return counts, np.stack([w.mean for w in welfords]), np.stack([w.m2 for w in welfords])


def save_checkpoint(fold: Accumulators, path: Path) -> None:
    """Write the fold atomically: temp file, fsync, rename, fsync the directory."""
    names = fold.concepts
    pos = _stack([fold.positive[n] for n in names], fold.shape)
    exc = _stack([fold.excluded[n] for n in names], fold.shape)
    arrays: dict[str, Any] = {
        "meta": np.array(
            json.dumps(
                {
                    "ledger_seq": fold.ledger_seq,
                    "concepts": names,
                    "fingerprint": fold_fingerprint(fold.labels, fold.shape),
                }
            )
        ),
        "total_count": np.array(fold.total.count, np.int64),
        "total_mean": fold.total.mean,
        "total_m2": fold.total.m2,
        "pos_count": pos[0],
        "pos_mean": pos[1],
        "pos_m2": pos[2],
        "exc_count": exc[0],
        "exc_mean": exc[1],
        "exc_m2": exc[2],
    }
    replace_with(path, lambda handle: np.savez(handle, **arrays))


def load_checkpoint(
    path: Path, labels: LabelsConfig, shape: tuple[int, int]
) -> Accumulators | None:
    """The checkpointed fold, or None when missing, unreadable or made under other settings."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["fingerprint"] != fold_fingerprint(labels, shape):
                return None
            fold = Accumulators(shape, labels, int(meta["ledger_seq"]))
            fold.total = Welford(int(data["total_count"]), data["total_mean"], data["total_m2"])
            # Each `data[key]` reads and decompresses the member again: read each one once.
            pos_count, pos_mean, pos_m2 = data["pos_count"], data["pos_mean"], data["pos_m2"]
            exc_count, exc_mean, exc_m2 = data["exc_count"], data["exc_mean"], data["exc_m2"]
            for i, name in enumerate(meta["concepts"]):
                fold.known.add(name)
                fold.positive[name] = Welford(int(pos_count[i]), pos_mean[i], pos_m2[i])
                fold.excluded[name] = Welford(int(exc_count[i]), exc_mean[i], exc_m2[i])
            return fold
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None
