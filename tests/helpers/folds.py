"""Comparing two folds: counts, means and the directions they give."""

from __future__ import annotations

import numpy as np

from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.vectors import direction


def directions(fold: Accumulators, method: str = "mean_diff") -> dict[str, np.ndarray]:
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
