"""Readout directions from accumulators: pure numpy, no I/O.

`mean_diff` is Contrastive Activation Addition: mean(positives) - mean(negatives), unit-normalized
per layer. `diag_lda` divides that difference by the pooled per-dimension variance first.
`shrinkage_lda` multiplies it by the inverse of the activations' covariance, shrunk by OAS;
`score_ridge` regresses the graded tag score (0-10, untagged eligible nodes at 0) on the
activations with the same shrunk covariance as the ridge term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast, get_args

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Method, VectorsConfig
from amygdala_daemon.core.covariance import Solver
from amygdala_daemon.core.stats import Welford

if TYPE_CHECKING:
    from amygdala_daemon.core.fold import Accumulators

Array = npt.NDArray[np.float64]

# Keeps diag_lda finite on dimensions that never vary in a small sample.
VARIANCE_FLOOR = 1e-6


COVARIANCE_METHODS: tuple[Method, ...] = ("shrinkage_lda", "score_ridge")


def as_method(name: object) -> Method:
    """`name` as a direction method (a manifest's `method`, a flag), or ValueError.

    >>> as_method("shrinkage_lda")
    'shrinkage_lda'
    """
    for method in get_args(Method):
        if name == method:
            return cast(Method, method)
    raise ValueError(f"{name!r} is not a direction method ({', '.join(get_args(Method))})")


def needs_covariance(method: Method) -> bool:
    """Whether `method` divides by the activations' covariance (and so needs a `Solver`)."""
    return method in COVARIANCE_METHODS


def tracks_covariance(settings: VectorsConfig, hidden: int) -> bool:
    """Whether the fold keeps the exact co-moment: a covariance method at a size it fits."""
    return needs_covariance(settings.method) and hidden <= settings.covariance_max_hidden


def direction(positive: Welford, negative: Welford, method: Method) -> Array:
    """Unit direction per layer, `[n_layers, hidden]`, float64, for the per-concept methods."""
    difference = positive.mean - negative.mean
    if method == "mean_diff":
        return unit_difference(difference)
    if method == "diag_lda":
        dof = max(positive.count + negative.count - 2, 1)
        return unit_difference(difference, (positive.m2 + negative.m2) / dof)
    raise ValueError(f"{method} needs the covariance: use `directions`")


def score_covariance(
    score_sum: float, score_x: Array, total_count: int, total_mean: Array
) -> Array:
    """cov(x, score) per layer over the eligible nodes, untagged ones scoring 0.

    `sum((y - mean y)(x - mean x)) / (n - 1) = (sum y x - sum y * mean x) / (n - 1)`.
    """
    return (score_x - score_sum * total_mean) / max(total_count - 1, 1)


def directions(
    fold: Accumulators,
    names: Sequence[str],
    method: Method,
    solver: Solver | None,
    negatives: Mapping[str, Welford] | None = None,
) -> dict[str, Array]:
    """Unit directions `[n_layers, hidden]` for each of `names` (each with both classes).

    The covariance methods solve against one pooled covariance per layer, the eligible nodes'
    own (label-free): for a concept whose eligible nodes are all positives or negatives it
    differs from the within-class covariance by a rank-one term along the class-mean
    difference, which leaves the LDA direction unchanged (Sherman-Morrison). `negatives`
    passes negative-class accumulators already subtracted, so they are not subtracted again.
    """
    if negatives is None:
        negatives = {name: fold.negatives(name) for name in names}
    if not needs_covariance(method):
        return {name: direction(fold.positive[name], negatives[name], method) for name in names}
    if not names:
        return {}
    if solver is None:
        raise ValueError(f"{method} needs a covariance solver")
    if method == "shrinkage_lda":
        rhs = np.stack([fold.positive[n].mean - negatives[n].mean for n in names])
    else:
        total = fold.total
        rhs = np.stack(
            [
                score_covariance(fold.score_sum[n], fold.score_x[n], total.count, total.mean)
                for n in names
            ]
        )
    units = unit_difference(solver.solve(rhs))
    return {name: units[i] for i, name in enumerate(names)}


def unit_difference(difference: Array, pooled_variance: Array | None = None) -> Array:
    """`difference` unit-normalized along its last axis, any leading shape.

    With `pooled_variance` (diag_lda), each dimension is divided by it first.
    """
    if pooled_variance is not None:
        difference = difference / (pooled_variance + VARIANCE_FLOOR)
    norms = np.linalg.norm(difference, axis=-1, keepdims=True)
    # A zero difference has no direction; leave it zero rather than divide by zero.
    unit: Array = np.divide(difference, norms, out=np.zeros_like(difference), where=norms > 0)
    return unit


@dataclass(frozen=True)
class Calibration:
    """Mean and standard deviation of the projections of positives and negatives."""

    pos_mean: float
    pos_std: float
    neg_mean: float
    neg_std: float

    def as_dict(self) -> dict[str, float]:
        return {
            "pos_mean": self.pos_mean,
            "pos_std": self.pos_std,
            "neg_mean": self.neg_mean,
            "neg_std": self.neg_std,
        }


def calibrate(
    unit: npt.NDArray[np.floating],
    positive_mean: npt.NDArray[np.floating],
    negative_mean: npt.NDArray[np.floating],
    positive_std: float,
    negative_std: float,
) -> Calibration:
    """Projection statistics on one layer's unit direction `[hidden]`.

    Means are exact: the projection of the mean is the mean of the projections. The standard
    deviations are measured on sampled activations (see `evaluation.evaluate`).
    """
    return Calibration(
        pos_mean=float(np.dot(positive_mean, unit)),
        pos_std=float(positive_std),
        neg_mean=float(np.dot(negative_mean, unit)),
        neg_std=float(negative_std),
    )


def z_score(projection: float, calibration: dict[str, float]) -> float:
    """How many negative-class standard deviations above the negatives' mean."""
    std = calibration["neg_std"]
    return (projection - calibration["neg_mean"]) / std if std > 0 else 0.0
