"""Readout directions from accumulators: pure numpy, no I/O.

`mean_diff` is Contrastive Activation Addition: mean(positives) - mean(negatives), unit-normalized
per layer. `diag_lda` divides that difference by the pooled per-dimension variance first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Method
from amygdala_daemon.core.stats import Welford

Array = npt.NDArray[np.float64]

# Keeps diag_lda finite on dimensions that never vary in a small sample.
VARIANCE_FLOOR = 1e-6


def direction(positive: Welford, negative: Welford, method: Method) -> Array:
    """Unit direction per layer, `[n_layers, hidden]`, float64."""
    difference = positive.mean - negative.mean
    if method == "mean_diff":
        return unit_difference(difference)
    if method == "diag_lda":
        dof = max(positive.count + negative.count - 2, 1)
        return unit_difference(difference, (positive.m2 + negative.m2) / dof)
    assert_never(method)


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
