"""The activations' covariance: kept exactly as a running co-moment, shrunk, and solved against.

The covariance-aware directions (`shrinkage_lda`, `score_ridge`) need `(S + shrinkage)^-1 v`
for one pooled covariance S per layer and many right-hand sides v (one per concept).

- `Comoment` keeps S exactly as a fold: a running mean and co-moment matrix per layer, with
  add and remove (Welford's rank-one update and its inverse), so incremental equals rebuild.
  It costs `n_layers * hidden^2` float64: 10.6 MB at SmolLM2's 4 x 576.
- Where that matrix is too large to keep (hidden above `vectors.covariance_max_hidden`), S is
  estimated from a fixed, deterministic sample of stored activations instead, and solved in
  the sample's span with the Woodbury identity (`SampledCovariance`).

Both shrink toward the mean eigenvalue: `(1 - rho) S + rho * mu * I` with `mu = trace(S) / p`,
a rule that needs no tuning by hand. `vectors.shrinkage` picks rho:

- `mean_eigenvalue` (the default): rho = 1/2, so the solve is against `S + mu * I`, the same
  direction. It measured best for separating concepts (BENCHMARKS.md, README).
- `oas`: Oracle Approximating Shrinkage (Chen, Wiesel, Eldar and Hero, 2010), as
  scikit-learn's `oas` computes it. It minimises the error of the covariance itself, and with
  fewer nodes than dimensions it shrinks too little for a readout direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Shrinkage

Array = npt.NDArray[np.float64]


@dataclass
class Comoment:
    """Running mean `[n_layers, hidden]` and co-moment `[n_layers, hidden, hidden]`."""

    count: int
    mean: Array
    m2: Array

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Comoment:
        n_layers, hidden = shape
        return cls(0, np.zeros(shape), np.zeros((n_layers, hidden, hidden)))

    def add(self, sample: npt.NDArray[np.floating]) -> None:
        x = np.asarray(sample, np.float64)
        delta = x - self.mean
        weight = self.count / (self.count + 1)
        self.count += 1
        self.mean += delta / self.count
        # m2 += (n / (n + 1)) * delta delta^T, per layer: symmetric by construction.
        self.m2 += weight * np.einsum("li,lj->lij", delta, delta)

    def remove(self, sample: npt.NDArray[np.floating]) -> None:
        """Undo `add(sample)` exactly (up to rounding)."""
        if self.count <= 0:
            raise ValueError("cannot remove from an empty co-moment")
        x = np.asarray(sample, np.float64)
        if self.count == 1:
            self.count = 0
            self.mean[...] = 0.0
            self.m2[...] = 0.0
            return
        self.mean = (self.count * self.mean - x) / (self.count - 1)
        self.count -= 1
        delta = x - self.mean
        self.m2 -= (self.count / (self.count + 1)) * np.einsum("li,lj->lij", delta, delta)

    def covariance(self) -> Array:
        """The sample covariance per layer (zeros below two samples)."""
        return self.m2 / max(self.count - 1, 1)


def shrinkage_intensity(
    rule: Shrinkage, trace: float, trace_of_square: float, hidden: int, count: int
) -> float:
    """rho for `rule` (see the module docstring)."""
    if rule == "mean_eigenvalue":
        return 0.5
    return oas_shrinkage(trace, trace_of_square, hidden, count)


def oas_shrinkage(trace: float, trace_of_square: float, hidden: int, count: int) -> float:
    """OAS's shrinkage intensity rho in [0, 1] from trace(S), trace(S @ S), p and n.

    S = I is its own target, so any intensity gives the same matrix; OAS says 1:

    >>> oas_shrinkage(trace=4.0, trace_of_square=4.0, hidden=4, count=1000)
    1.0
    >>> few, many = (oas_shrinkage(4.0, 16.0, 4, n) for n in (2, 10_000))
    >>> few > many
    True
    """
    mu = trace / hidden
    alpha = trace_of_square / hidden**2
    numerator = alpha + mu**2
    denominator = (count + 1) * (alpha - mu**2 / hidden)
    if denominator <= 0:
        return 1.0
    return float(min(numerator / denominator, 1.0))


class Solver(Protocol):
    """Applies `(shrunk S)^-1` per layer to stacks of vectors `[k, n_layers, hidden]`."""

    shrinkage: list[float]

    def solve(self, rhs: Array) -> Array: ...


class ExactCovariance:
    """The fold's exact co-moment, shrunk, and factored once per layer."""

    def __init__(self, comoment: Comoment, rule: Shrinkage = "mean_eigenvalue") -> None:
        covariance = comoment.covariance()
        hidden = covariance.shape[-1]
        self.factors: list[tuple[Array, Array]] = []
        self.shrinkage: list[float] = []
        for layer in covariance:
            trace = float(np.trace(layer))
            square = float(np.sum(layer * layer))
            rho = shrinkage_intensity(rule, trace, square, hidden, comoment.count)
            shrunk = (1.0 - rho) * layer + rho * (trace / hidden) * np.eye(hidden)
            # eigh rather than Cholesky: a covariance of fewer samples than dimensions is
            # singular, and rho can be 0 when the samples say so.
            values, vectors = np.linalg.eigh(shrunk)
            floor = max(float(values[-1]), 1.0) * 1e-12
            self.factors.append((np.maximum(values, floor), vectors))
            self.shrinkage.append(rho)

    def solve(self, rhs: Array) -> Array:
        out = np.empty_like(rhs)
        for layer, (values, vectors) in enumerate(self.factors):
            out[:, layer] = ((rhs[:, layer] @ vectors) / values) @ vectors.T
        return out


class SampledCovariance:
    """S estimated from `samples` `[m, n_layers, hidden]` centred on `mean`, then shrunk.

    `(a I + b X^T X)^-1 v = (v - X^T (a/b I + X X^T)^-1 X v) / a` (Woodbury): the cost is
    `m^2 * hidden` per layer, never `hidden^3`.
    """

    def __init__(self, samples: Array, mean: Array, rule: Shrinkage = "mean_eigenvalue") -> None:
        self.parts: list[tuple[Array, Array, float]] = []
        self.shrinkage: list[float] = []
        m, _, hidden = samples.shape
        for layer in range(samples.shape[1]):
            x = samples[:, layer, :] - mean[layer]
            gram = x @ x.T  # [m, m]; S = x^T x / (m - 1)
            dof = max(m - 1, 1)
            trace = float(np.trace(gram)) / dof
            trace_of_square = float(np.sum(gram * gram)) / dof**2
            rho = shrinkage_intensity(rule, trace, trace_of_square, hidden, m)
            a = max(rho * trace / hidden, 1e-12)
            b = (1.0 - rho) / dof
            inner = np.linalg.inv(a * np.eye(m) + b * gram) if b > 0 else np.zeros((m, m))
            self.parts.append((x, inner * b, a))
            self.shrinkage.append(rho)

    def solve(self, rhs: Array) -> Array:
        out = np.empty_like(rhs)
        for layer, (x, inner, a) in enumerate(self.parts):
            v = rhs[:, layer]
            out[:, layer] = (v - ((v @ x.T) @ inner.T) @ x) / a
        return out
