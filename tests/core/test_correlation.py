"""Pearson and Spearman r against plain references: numpy's corrcoef and ranks by counting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amygdala_daemon.core.correlation import midranks, pearson, spearman


def counted_ranks(values: list[float]) -> list[float]:
    """1-based ranks by counting: below, plus half of the other equal values."""
    return [
        1
        + sum(other < value for other in values)
        + (sum(other == value for other in values) - 1) / 2
        for value in values
    ]


@pytest.mark.parametrize("seed", range(5))
def test_pearson_equals_corrcoef(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_pearson_keeps_its_digits_on_a_large_offset() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    # Residual-stream projections sit near 10^4 with a spread of a few units.
    assert pearson(x + 2.4e4, y - 1.3e4) == pytest.approx(pearson(x, y), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_with_ties_equals_the_counted_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ratings = rng.integers(0, 6, size=30).astype(float).tolist()  # many ties
    projections = (np.array(ratings) + rng.normal(size=30)).round(1).tolist()
    assert midranks(ratings).tolist() == counted_ranks(ratings)
    expected = np.corrcoef(counted_ranks(projections), counted_ranks(ratings))[0, 1]
    assert spearman(projections, ratings) == pytest.approx(expected, abs=1e-12)


def test_spearman_only_sees_the_order() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    assert spearman(np.exp(x), y**3) == pytest.approx(spearman(x, y), abs=1e-12)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_undefined_is_nan() -> None:
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(pearson([1.0], [2.0]))
    assert math.isnan(spearman([4.0, 4.0], [1.0, 2.0]))
    with pytest.raises(ValueError, match="3 values against 2"):
        pearson([1.0, 2.0, 3.0], [1.0, 2.0])
