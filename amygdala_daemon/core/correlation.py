"""Agreement between projections and human ratings: Pearson and Spearman r, pure numpy.

AUROC, for ratings that are labels, lives in `quality` beside the other separation figures.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def midranks(values: npt.ArrayLike) -> Array:
    """1-based ranks, tied values sharing the mean of the ranks they span.

    >>> midranks([10.0, 20.0, 10.0, 30.0]).tolist()
    [1.5, 3.0, 1.5, 4.0]
    """
    array = np.asarray(values, np.float64).ravel()
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    ranks: Array = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    return ranks


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson's r; NaN when either side is constant or there are fewer than two pairs.

    >>> pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    0.9933992677987828
    """
    first = np.asarray(x, np.float64).ravel()
    second = np.asarray(y, np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"pearson: {first.size} values against {second.size}")
    if first.size < 2:
        return math.nan
    # Centre first: the one-pass formula loses every digit on projections near 10^4.
    dx = first - first.mean()
    dy = second - second.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / denominator))


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's r: Pearson's r of the midranks, so ties are averaged.

    >>> spearman([1.0, 2.0, 2.0, 9.0], [0.1, 0.3, 0.2, 0.4])
    0.9486832980505138
    """
    return pearson(midranks(x), midranks(y))
