"""Are the vectors any good? Separation, cross-talk and layer ranking: pure numpy.

The metrics over held-out scores live here; `evaluation` produces those scores from stored
activations (a node scored on a direction fit without its bucket).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.sampling import N_FOLDS

Array = npt.NDArray[np.float64]

HELD_OUT_SCHEME = f"{N_FOLDS}-fold: bucket = sha256(node id) mod {N_FOLDS}"


# -- separation of two samples ------------------------------------------------------------


def auroc(positives: npt.ArrayLike, negatives: npt.ArrayLike) -> float:
    """P(a random positive scores above a random negative), ties counting one half.

    The Mann-Whitney U statistic over midranks; NaN when either side is empty.

    >>> auroc([3.0, 2.0], [1.0, 2.0])
    0.875
    """
    pos = np.asarray(positives, np.float64).ravel()
    neg = np.asarray(negatives, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return math.nan
    values = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # 1-based midrank of each distinct value: tied values share the mean of their ranks.
    midranks = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(midranks[inverse[: pos.size]].sum())
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return u / (pos.size * neg.size)


def cohens_d(positives: npt.ArrayLike, negatives: npt.ArrayLike) -> float:
    """Difference of means over the pooled standard deviation; NaN when undefined."""
    pos = np.asarray(positives, np.float64).ravel()
    neg = np.asarray(negatives, np.float64).ravel()
    dof = pos.size + neg.size - 2
    if pos.size == 0 or neg.size == 0 or dof <= 0:
        return math.nan
    pooled_m2 = float(((pos - pos.mean()) ** 2).sum() + ((neg - neg.mean()) ** 2).sum())
    pooled_std = math.sqrt(pooled_m2 / dof)
    if pooled_std == 0.0:
        return math.nan
    return float(pos.mean() - neg.mean()) / pooled_std


# -- cross-talk and co-occurrence -----------------------------------------------------------


def cosine_matrix(rows: npt.ArrayLike) -> Array:
    """Cosine between every pair of rows `[n, hidden]`; NaN for a zero row."""
    matrix = np.asarray(rows, np.float64)
    norms = np.linalg.norm(matrix, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = matrix / safe[:, None]
    cosines: Array = np.clip(unit @ unit.T, -1.0, 1.0)
    zero = norms == 0
    cosines[zero, :] = math.nan
    cosines[:, zero] = math.nan
    # Rounding leaves 0.9999999; a row is exactly parallel to itself.
    np.fill_diagonal(cosines, np.where(zero, math.nan, 1.0))
    return cosines


def cooccurrence(concepts: Sequence[str], positives: Mapping[str, set[str]]) -> tuple[Array, Array]:
    """Nodes positive for both concepts, and the Jaccard index of their positive sets."""
    n = len(concepts)
    both = np.zeros((n, n), np.float64)
    jaccard = np.zeros((n, n), np.float64)
    for i, a in enumerate(concepts):
        for j, b in enumerate(concepts):
            first, second = positives.get(a, set()), positives.get(b, set())
            shared = len(first & second)
            union = len(first | second)
            both[i, j] = shared
            jaccard[i, j] = shared / union if union else 0.0
    return both, jaccard


@dataclass(frozen=True)
class Pair:
    """Two concepts whose vectors point the same way at one layer."""

    first: str
    second: str
    layer: int
    cosine: float


def flag_pairs(
    concepts: Sequence[str], matrices: Mapping[int, Array], threshold: float
) -> list[Pair]:
    """Pairs whose cosine exceeds `threshold`, strongest first."""
    pairs = []
    for layer, matrix in matrices.items():
        for i in range(len(concepts)):
            for j in range(i + 1, len(concepts)):
                value = float(matrix[i, j])
                if value > threshold:
                    pairs.append(Pair(concepts[i], concepts[j], layer, value))
    return sorted(pairs, key=lambda p: (-p.cosine, p.first, p.second, p.layer))


# -- layer ranking --------------------------------------------------------------------------


def recommend_layers(
    mean_auroc: Mapping[int, float], max_layers: int = 4, min_gap: int = 3
) -> list[int]:
    """The best layers by mean AUROC, greedily, none closer than `min_gap` blocks to another.

    Neighbouring blocks read nearly the same residual stream; spreading the picks gives the
    readout several distinct views rather than one view four times.

    >>> recommend_layers({10: 0.9, 11: 0.95, 12: 0.91, 20: 0.8, 5: 0.7})
    [11, 20, 5]
    """
    ranked = sorted(
        (layer for layer, score in mean_auroc.items() if not math.isnan(score)),
        key=lambda layer: (-mean_auroc[layer], layer),
    )
    chosen: list[int] = []
    for layer in ranked:
        if len(chosen) >= max_layers:
            break
        if all(abs(layer - other) >= min_gap for other in chosen):
            chosen.append(layer)
    return chosen


def rule_of_thumb_layers(n_layers: int) -> list[int]:
    """Blocks between 60% and 80% of depth, where emotion readouts are usually placed."""
    last = n_layers - 1
    return list(range(math.ceil(0.6 * last), math.floor(0.8 * last) + 1))


def nan_mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return None if math.isnan(value) or math.isinf(value) else value


# -- held-out scores ------------------------------------------------------------------------


@dataclass
class Scores:
    """Held-out scores `[n, n_layers]` of one concept's positives and negatives."""

    positive: Array
    negative: Array

    def auroc(self, layer_index: int) -> float:
        return auroc(self.positive[:, layer_index], self.negative[:, layer_index])

    def cohens_d(self, layer_index: int) -> float:
        return cohens_d(self.positive[:, layer_index], self.negative[:, layer_index])


def quality_summary(
    scores: Mapping[str, Scores], concepts: Sequence[str], layers: Sequence[int]
) -> dict[str, Any]:
    """The manifest's `quality` object: held-out AUROC and Cohen's d per concept and layer."""
    auroc_table: dict[str, dict[str, float | None]] = {}
    d_table: dict[str, dict[str, float | None]] = {}
    for name in concepts:
        found = scores.get(name)
        auroc_table[name] = {
            str(layer): finite_or_none(found.auroc(i)) if found else None
            for i, layer in enumerate(layers)
        }
        d_table[name] = {
            str(layer): finite_or_none(found.cohens_d(i)) if found else None
            for i, layer in enumerate(layers)
        }
    return {"held_out": HELD_OUT_SCHEME, "auroc": auroc_table, "cohens_d": d_table}
