"""A held-out bucket read and labelled, and the directions fit on the fold without it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.covariance import Solver
from amygdala_daemon.core.labels import label_node
from amygdala_daemon.core.vectors import needs_covariance, unit_difference

if TYPE_CHECKING:
    from amygdala_daemon.core.changes import Entry
    from amygdala_daemon.core.config import Method
    from amygdala_daemon.core.fold import Accumulators

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Sample:
    """Node ids to read, per bucket; which are in the prefix; what each extra was taken for."""

    buckets: dict[int, list[str]]
    prefix: frozenset[str]
    extras: dict[str, frozenset[str]]


@dataclass(frozen=True)
class Batch:
    """One bucket's sampled nodes, read and labelled: rows are nodes, columns concepts."""

    activations: Array  # [n, n_layers, hidden]
    positive: Mask  # [n, n_concepts]: the fold's labels, so the fit leaves the row out
    excluded: Mask  # [n, n_concepts]: not a negative (the fold's rule, positives included)
    prefix: Mask  # [n]
    scored_positive: Mask  # [n, n_concepts]: `positive`, but an extra only for its concepts
    scores: Array  # [n, n_concepts]: each node's tag score per concept (untagged: 0)

    @classmethod
    def read(
        cls, entries: Sequence[Entry], fold: Accumulators, concepts: Sequence[str], sample: Sample
    ) -> Batch:
        column = {name: i for i, name in enumerate(concepts)}
        positive = np.zeros((len(entries), len(concepts)), bool)
        excluded = np.zeros((len(entries), len(concepts)), bool)
        taken_for = np.ones((len(entries), len(concepts)), bool)
        scores = np.zeros((len(entries), len(concepts)))
        for row, entry in enumerate(entries):
            for name, score in entry.tags.items():
                if name in column:
                    scores[row, column[name]] = score
            # Labelled from the entry itself, as read: the same labels the fold used.
            labels = label_node(entry.tags, entry.content, fold.known, fold.labels)
            positive[row, [column[n] for n in labels.positive if n in column]] = True
            excluded[row, [column[n] for n in labels.excluded_from_negatives if n in column]] = True
            if entry.node_id in sample.extras:
                # Scoring an extra for its other tags would over-weight the rare concept's
                # company among those tags' positives.
                taken_for[row] = False
                taken_for[row, [column[n] for n in sample.extras[entry.node_id]]] = True
        return cls(
            activations=np.stack([entry.activations.astype(np.float64) for entry in entries]),
            positive=positive,
            excluded=excluded,
            prefix=np.array([entry.node_id in sample.prefix for entry in entries], bool),
            scored_positive=positive & taken_for,
            scores=scores,
        )

    @property
    def negative(self) -> Mask:
        """Scored as a negative: prefix nodes only (extras stand for their concept alone)."""
        mask: Mask = self.prefix[:, None] & ~self.excluded & ~self.positive
        return mask


class HeldOutFit:
    """Directions fit on the fold minus one bucket, for every tracked concept at once.

    Holds the fold as per-concept sums (and sums of squares for diag_lda), so leaving a
    bucket out is a subtraction of that bucket's own sums.
    """

    def __init__(
        self,
        fold: Accumulators,
        concepts: Sequence[str],
        method: Method,
        solver: Solver | None = None,
    ) -> None:
        self.columns = [i for i, name in enumerate(concepts) if name in fold.positive]
        names = [concepts[i] for i in self.columns]
        self.method = method
        # The covariance is label-free, so it is not refit without each bucket: the held-out
        # labels never shape a direction, only the held-out activations' share of S.
        self.solver = solver
        self.total_count = fold.total.count
        self.total_sum = fold.total.count * fold.total.mean
        self.score_sum = np.array([fold.score_sum[name] for name in names], np.float64)
        self.score_x = (
            _stack([fold.score_x[name] for name in names], (len(names), *fold.shape))
            if method == "score_ridge"
            else np.zeros(0)
        )
        pos = [fold.positive[name] for name in names]
        excluded = [fold.excluded[name] for name in names]
        total = fold.total
        self.pos_count = np.array([w.count for w in pos], np.float64)
        self.neg_count = total.count - np.array([w.count for w in excluded], np.float64)
        shape = (len(names), *fold.shape)
        self.pos_sum = _stack([w.count * w.mean for w in pos], shape)
        self.neg_sum = total.count * total.mean - _stack(
            [w.count * w.mean for w in excluded], shape
        )
        self.pos_squares = self.neg_squares = np.zeros(0)
        if method == "diag_lda":
            squares = [w.m2 + w.count * w.mean**2 for w in excluded]
            total_squares = total.m2 + total.count * total.mean**2
            self.pos_squares = _stack([w.m2 + w.count * w.mean**2 for w in pos], shape)
            self.neg_squares = total_squares - _stack(squares, shape)

    def without(self, batch: Batch) -> tuple[Array, Array, Mask]:
        """Units `[t, n_layers, hidden]`, midpoint projections `[t, n_layers]`, fit or not."""
        x = batch.activations
        positive = batch.positive[:, self.columns]
        excluded = batch.excluded[:, self.columns]
        pos_count = self.pos_count - positive.sum(axis=0)
        # The bucket's negatives for a concept: all its nodes but those excluded for it.
        neg_count = self.neg_count - (len(x) - excluded.sum(axis=0))
        pos_sum = _minus_rows(self.pos_sum, x, positive)
        neg_sum = _minus_rows(self.neg_sum, x, excluded, sign=-1.0, shift=x.sum(axis=0))
        fit = (pos_count > 0) & (neg_count > 0)
        pos_n = np.maximum(pos_count, 1.0)[:, None, None]
        neg_n = np.maximum(neg_count, 1.0)[:, None, None]
        pos_mean, neg_mean = pos_sum / pos_n, neg_sum / neg_n
        pooled = None
        if self.method == "diag_lda":
            squared = x**2
            pos_sq = _minus_rows(self.pos_squares, squared, positive)
            neg_sq = _minus_rows(
                self.neg_squares, squared, excluded, sign=-1.0, shift=squared.sum(axis=0)
            )
            m2 = np.maximum(pos_sq - pos_sum * pos_mean, 0.0) + np.maximum(
                neg_sq - neg_sum * neg_mean, 0.0
            )
            pooled = m2 / np.maximum(pos_count + neg_count - 2.0, 1.0)[:, None, None]
        units = self._units(batch, pos_mean - neg_mean, pooled)
        units[~fit] = 0.0
        midpoints = (
            np.einsum("tlh,tlh->tl", pos_mean, units) + np.einsum("tlh,tlh->tl", neg_mean, units)
        ) / 2.0
        return units, midpoints, fit

    def _units(self, batch: Batch, difference: Array, pooled: Array | None) -> Array:
        if not needs_covariance(self.method):
            return unit_difference(difference, pooled)
        assert self.solver is not None, f"{self.method} needs a covariance solver"
        if self.method == "shrinkage_lda":
            return unit_difference(self.solver.solve(difference))
        # score_ridge: cov(x, score) over the fold minus this bucket's nodes.
        x = batch.activations
        y = batch.scores[:, self.columns]
        count = self.total_count - len(x)
        mean = (self.total_sum - x.sum(axis=0)) / max(count, 1)
        score_sum = self.score_sum - y.sum(axis=0)
        score_x = self.score_x - np.einsum("nt,nlh->tlh", y, x)
        cross = (score_x - score_sum[:, None, None] * mean[None]) / max(count - 1, 1)
        return unit_difference(self.solver.solve(cross))


def _stack(arrays: list[Array], shape: tuple[int, ...]) -> Array:
    return np.stack(arrays) if arrays else np.zeros(shape)


def _minus_rows(
    base: Array, x: Array, members: Mask, sign: float = 1.0, shift: Array | None = None
) -> Array:
    """`base[t] - shift - sign * sum of x over members[:, t]`, as a new array.

    A node belongs to a handful of concepts, so a sum per column beats a dense product.
    """
    out = base - shift if shift is not None else base.copy()
    for column in np.flatnonzero(members.any(axis=0)):
        out[column] -= sign * x[members[:, column]].sum(axis=0)
    return out
