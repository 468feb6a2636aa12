"""Comparing two folds: counts, means and the directions they give."""

from __future__ import annotations

import numpy as np
import pytest

from amygdala_daemon.core.config import Method
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.vectors import direction


def directions(fold: Accumulators, method: Method = "mean_diff") -> dict[str, np.ndarray]:
    return {
        name: direction(fold.positive[name], fold.negatives(name), method)
        for name in fold.concepts
        if fold.positive[name].count > 0 and fold.negatives(name).count > 0
    }


def assert_same_fold(left: Accumulators, right: Accumulators, rtol: float = 1e-9) -> None:
    assert left.total.count == right.total.count
    assert {c.name: (c.n_pos, c.n_neg) for c in left.counts() if c.n_pos} == {
        c.name: (c.n_pos, c.n_neg) for c in right.counts() if c.n_pos
    }
    np.testing.assert_allclose(left.total.mean, right.total.mean, rtol=rtol, atol=0)
    a, b = directions(left), directions(right)
    assert a.keys() == b.keys() and a
    for name in a:
        scale = np.abs(b[name]).max()
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=rtol * scale, err_msg=name)


def assert_same_statistics(left: Accumulators, right: Accumulators, rtol: float = 1e-9) -> None:
    """The covariance-method statistics agree too: score sums and the co-moment, if kept."""
    assert left.score_sum.keys() == right.score_sum.keys()
    for name in left.score_sum:
        assert left.score_sum[name] == pytest.approx(right.score_sum[name], rel=rtol, abs=1e-9)
        scale = max(np.abs(right.score_x[name]).max(), 1.0)
        np.testing.assert_allclose(left.score_x[name], right.score_x[name], atol=rtol * scale)
    assert (left.comoment is None) == (right.comoment is None)
    if left.comoment is not None and right.comoment is not None:
        assert left.comoment.count == right.comoment.count
        scale = np.abs(right.comoment.m2).max()
        np.testing.assert_allclose(left.comoment.m2, right.comoment.m2, atol=rtol * scale)
