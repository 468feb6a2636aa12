"""The fold's checkpoint: an `.npz` written atomically, stamped with the ledger sequence.

It is stamped with the ledger's identity too: a new or reset ledger counts its sequence from
the start again, so a sequence number alone cannot say which ledger a checkpoint folds.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.covariance import Comoment
from amygdala_daemon.core.fold import Accumulators, fold_fingerprint
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.store.atomic import replace_with

log = logging.getLogger(__name__)


def _stack(welfords: list[Welford], shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    counts = np.array([w.count for w in welfords], np.int64)
    if not welfords:
        empty = np.zeros((0, *shape), np.float64)
        return counts, empty, empty
    return counts, np.stack([w.mean for w in welfords]), np.stack([w.m2 for w in welfords])


def save_checkpoint(fold: Accumulators, path: Path, ledger_id: str = "") -> None:
    """Write the fold of ledger `ledger_id` atomically: temp file, fsync, rename, fsync dir."""
    names = fold.concepts
    pos = _stack([fold.positive[n] for n in names], fold.shape)
    exc = _stack([fold.excluded[n] for n in names], fold.shape)
    arrays: dict[str, Any] = {
        "meta": np.array(
            json.dumps(
                {
                    "ledger_seq": fold.ledger_seq,
                    "ledger_id": ledger_id,
                    "concepts": names,
                    "fingerprint": fold_fingerprint(fold.labels, fold.shape, fold.covariance),
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
        "score_sum": np.array([fold.score_sum[n] for n in names], np.float64),
        "carriers": np.array([fold.carriers[n] for n in names], np.int64),
        "score_x": np.stack([fold.score_x[n] for n in names])
        if names
        else np.zeros((0, *fold.shape)),
    }
    if fold.comoment is not None:
        arrays["cov_count"] = np.array(fold.comoment.count, np.int64)
        arrays["cov_mean"] = fold.comoment.mean
        arrays["cov_m2"] = fold.comoment.m2
    replace_with(path, lambda handle: np.savez(handle, **arrays))


def load_checkpoint(
    path: Path,
    labels: LabelsConfig,
    shape: tuple[int, int],
    covariance: bool = False,
    ledger_id: str | None = None,
) -> Accumulators | None:
    """The checkpointed fold, or None when missing, unreadable or made under other settings.

    With `ledger_id`, also None when the checkpoint was not stamped with that ledger.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["fingerprint"] != fold_fingerprint(labels, shape, covariance):
                return None
            if ledger_id is not None and meta.get("ledger_id") != ledger_id:
                return None
            fold = Accumulators(shape, labels, int(meta["ledger_seq"]), covariance=covariance)
            fold.total = Welford(int(data["total_count"]), data["total_mean"], data["total_m2"])
            # Each `data[key]` reads and decompresses the member again: read each one once.
            pos_count, pos_mean, pos_m2 = data["pos_count"], data["pos_mean"], data["pos_m2"]
            exc_count, exc_mean, exc_m2 = data["exc_count"], data["exc_mean"], data["exc_m2"]
            score_sum, score_x, carriers = data["score_sum"], data["score_x"], data["carriers"]
            for i, name in enumerate(meta["concepts"]):
                fold.known.add(name)
                fold.positive[name] = Welford(int(pos_count[i]), pos_mean[i], pos_m2[i])
                fold.excluded[name] = Welford(int(exc_count[i]), exc_mean[i], exc_m2[i])
                fold.score_sum[name] = float(score_sum[i])
                fold.score_x[name] = score_x[i]
                fold.carriers[name] = int(carriers[i])
            if covariance:
                fold.comoment = Comoment(int(data["cov_count"]), data["cov_mean"], data["cov_m2"])
            return fold
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # Nothing is lost (the ledger holds every activation), but a refold of a large ledger
        # takes a while, and the user should know why.
        log.warning("%s is not a readable checkpoint (%s); refolding from the ledger", path, exc)
        return None
