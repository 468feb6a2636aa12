"""Are the vectors any good? Held-out separation, cross-talk and layer ranking: pure numpy.

Every node is scored by a direction fit without it: nodes fall into `N_FOLDS` buckets by
sha256 of their id, and bucket k is projected onto the direction fit on the fold's statistics
minus bucket k (Chan's subtraction, so no refit over the other buckets is needed). Scores are
centered on the training midpoint between the class means, so scores from different buckets
share one scale and can be pooled into one AUROC per concept and layer.

Nothing here opens a file: entries come through `EntryStore`, which `Ledger` satisfies.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from amygdala_daemon.labels import is_eligible, label_node
from amygdala_daemon.stats import Welford
from amygdala_daemon.vectors import direction

if TYPE_CHECKING:
    from amygdala_daemon.accumulators import Accumulators
    from amygdala_daemon.ledger import Entry

Array = npt.NDArray[np.float64]

N_FOLDS = 5
# Most nodes scored per evaluation: bounds the two ledger reads a publish pays for.
SCORED_LIMIT = 5000
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


def held_out_bucket(node_id: str, n_folds: int = N_FOLDS) -> int:
    """The bucket a node is scored in; stable across runs, machines and Python versions."""
    return int(hashlib.sha256(node_id.encode()).hexdigest(), 16) % n_folds


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


# -- held-out scoring over stored entries ---------------------------------------------------


class EntryStore(Protocol):
    """Where stored activations come from (the ledger, or a sample held in memory)."""

    def live_labels(self) -> Iterator[tuple[str, dict[str, float], str]]: ...

    def sample_live_entries(self, node_ids: list[str]) -> Iterator[Entry]: ...


@dataclass
class Scores:
    """Held-out scores `[n, n_layers]` of one concept's positives and negatives."""

    positive: Array
    negative: Array

    def auroc(self, layer_index: int) -> float:
        return auroc(self.positive[:, layer_index], self.negative[:, layer_index])

    def cohens_d(self, layer_index: int) -> float:
        return cohens_d(self.positive[:, layer_index], self.negative[:, layer_index])


@dataclass
class _Bucket:
    """The statistics of one bucket, labelled exactly as the fold labels them."""

    total: Welford
    positive: dict[str, Welford] = field(default_factory=dict)
    excluded: dict[str, Welford] = field(default_factory=dict)


def scored_nodes(
    store: EntryStore, fold: Accumulators, limit: int = SCORED_LIMIT
) -> dict[int, list[str]]:
    """Eligible node ids per bucket, at most `limit` in all, chosen by hash (deterministic)."""
    keyed = sorted(
        (hashlib.sha256(node_id.encode()).hexdigest(), node_id)
        for node_id, tags, content in store.live_labels()
        if is_eligible(tags, content, fold.labels)
    )
    buckets: dict[int, list[str]] = {k: [] for k in range(N_FOLDS)}
    for key, node_id in keyed[:limit]:
        buckets[int(key, 16) % N_FOLDS].append(node_id)
    return buckets


def cross_validate(
    fold: Accumulators,
    store: EntryStore,
    concepts: Sequence[str],
    method: str,
    limit: int = SCORED_LIMIT,
) -> dict[str, Scores]:
    """Held-out scores per concept: each bucket projected on a direction fit without it.

    `fold` must be the fold of exactly the entries `store` holds; a concept the fold does not
    track (or with an empty class once a bucket is left out) gets no scores from that bucket.
    """
    wanted = [name for name in concepts if name in fold.positive]
    collected: dict[str, tuple[list[Array], list[Array]]] = {n: ([], []) for n in wanted}
    for ids in scored_nodes(store, fold, limit).values():
        if not ids:
            continue
        bucket = _Bucket(Welford.empty(fold.shape))
        for name in wanted:
            bucket.positive[name] = Welford.empty(fold.shape)
            bucket.excluded[name] = Welford.empty(fold.shape)
        for entry in store.sample_live_entries(ids):
            labels = label_node(entry.tags, entry.content, fold.known, fold.labels)
            bucket.total.add(entry.activations)
            for name in wanted:
                if name in labels.positive:
                    bucket.positive[name].add(entry.activations)
                if name in labels.excluded_from_negatives:
                    bucket.excluded[name].add(entry.activations)
        fits = {name: _fit_without(fold, bucket, name, method) for name in wanted}
        names = [name for name, fit in fits.items() if fit is not None]
        if not names:
            continue
        units = np.stack([fits[name][0] for name in names])  # type: ignore[index]
        midpoints = np.stack([fits[name][1] for name in names])  # type: ignore[index]
        entries = list(store.sample_live_entries(ids))
        if not entries:
            continue
        # All concepts and all of the bucket's entries at once: one matrix product per layer.
        stacked = np.stack([entry.activations.astype(np.float64) for entry in entries])
        all_scores = (
            np.stack(
                [units[:, layer, :] @ stacked[:, layer, :].T for layer in range(units.shape[1])],
                axis=-1,
            )
            - midpoints[:, None, :]
        )  # [concepts, entries, layers]
        for column, entry in enumerate(entries):
            labels = label_node(entry.tags, entry.content, fold.known, fold.labels)
            for row, name in enumerate(names):
                # Positive first, as the calibration sample does.
                if name in labels.positive:
                    collected[name][0].append(all_scores[row, column])
                elif name not in labels.excluded_from_negatives:
                    collected[name][1].append(all_scores[row, column])
    width = fold.shape[0]
    return {
        name: Scores(_stack(pos, width), _stack(neg, width))
        for name, (pos, neg) in collected.items()
    }


def _fit_without(
    fold: Accumulators, bucket: _Bucket, name: str, method: str
) -> tuple[Array, Array] | None:
    """Unit direction `[n_layers, hidden]` and midpoint projection `[n_layers]`, or None."""
    train_pos = fold.positive[name].subtract(bucket.positive[name])
    held_neg = bucket.total.subtract(bucket.excluded[name])
    train_neg = fold.negatives(name).subtract(held_neg)
    if train_pos.count == 0 or train_neg.count == 0:
        return None
    unit = direction(train_pos, train_neg, method)
    midpoint = np.einsum("lh,lh->l", (train_pos.mean + train_neg.mean) / 2.0, unit)
    return unit, midpoint


def _stack(rows: list[Array], width: int) -> Array:
    return np.stack(rows) if rows else np.zeros((0, width), np.float64)


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


def manifest_quality(
    fold: Accumulators,
    store: EntryStore,
    concepts: Sequence[str],
    layers: Sequence[int],
    method: str,
) -> dict[str, Any]:
    """What a publish records so a consumer can hide weak concepts."""
    scores = cross_validate(fold, store, concepts, method)
    return quality_summary(scores, concepts, layers)
