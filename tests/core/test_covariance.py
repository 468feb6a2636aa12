"""covariance.py: the running co-moment, OAS shrinkage, and the two solvers."""

from __future__ import annotations

import numpy as np
import pytest

from amygdala_daemon.core.config import Shrinkage
from amygdala_daemon.core.covariance import (
    Comoment,
    ExactCovariance,
    SampledCovariance,
    oas_shrinkage,
)


def oas_reference(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """scikit-learn's OAS, written out: the shrunk covariance of `samples` `[n, p]`."""
    n, p = samples.shape
    covariance = np.cov(samples, rowvar=False)
    mu = np.trace(covariance) / p
    alpha = np.mean(covariance**2)
    numerator = alpha + mu**2
    denominator = (n + 1) * (alpha - mu**2 / p)
    rho = 1.0 if denominator == 0 else min(numerator / denominator, 1.0)
    return (1 - rho) * covariance + rho * mu * np.eye(p), rho


def test_adds_and_removes_equal_a_two_pass_covariance() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(300, 2, 12)) * rng.uniform(0.2, 4.0, size=12) + 5.0
    comoment = Comoment.empty((2, 12))
    for x in samples:
        comoment.add(x)
    for x in samples[::3]:
        comoment.remove(x)
    kept = np.delete(samples, np.s_[::3], axis=0)
    assert comoment.count == len(kept)
    np.testing.assert_allclose(comoment.mean, kept.mean(axis=0), rtol=1e-12)
    for layer in range(2):
        reference = np.cov(kept[:, layer, :], rowvar=False)
        np.testing.assert_allclose(comoment.covariance()[layer], reference, rtol=1e-9, atol=1e-12)
    for x in kept:
        comoment.remove(x)
    assert comoment.count == 0 and not comoment.m2.any()
    with pytest.raises(ValueError, match="empty"):
        comoment.remove(samples[0])


def test_the_exact_solver_applies_the_oas_shrunk_inverse() -> None:
    rng = np.random.default_rng(1)
    # Fewer samples than dimensions: the raw covariance is singular, OAS must make it solvable.
    samples = rng.normal(size=(20, 1, 30)) @ rng.normal(size=(30, 30)) * 0.3
    comoment = Comoment.empty((1, 30))
    for x in samples:
        comoment.add(x)
    solver = ExactCovariance(comoment, "oas")
    shrunk, rho = oas_reference(samples[:, 0, :])
    assert solver.shrinkage[0] == pytest.approx(rho, rel=1e-9)
    assert 0.0 < rho < 1.0
    rhs = rng.normal(size=(4, 1, 30))
    expected = np.linalg.solve(shrunk, rhs[:, 0, :].T).T
    np.testing.assert_allclose(solver.solve(rhs)[:, 0, :], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", ["oas", "mean_eigenvalue"])
@pytest.mark.parametrize("count", [8, 200])
def test_the_sampled_solver_equals_the_exact_one_on_the_same_samples(
    count: int, rule: Shrinkage
) -> None:
    """Woodbury in the sample's span gives the same answer as factoring the p x p matrix."""
    rng = np.random.default_rng(count)
    samples = rng.normal(size=(count, 2, 24)) * rng.uniform(0.5, 3.0, size=24)
    comoment = Comoment.empty((2, 24))
    for x in samples:
        comoment.add(x)
    exact = ExactCovariance(comoment, rule)
    sampled = SampledCovariance(samples, samples.mean(axis=0), rule)
    np.testing.assert_allclose(sampled.shrinkage, exact.shrinkage, rtol=1e-9)
    rhs = rng.normal(size=(5, 2, 24))
    np.testing.assert_allclose(sampled.solve(rhs), exact.solve(rhs), rtol=1e-7, atol=1e-9)


def test_the_mean_eigenvalue_rule_solves_against_s_plus_mu_i() -> None:
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(50, 1, 12)) * np.linspace(0.1, 5.0, 12)
    comoment = Comoment.empty((1, 12))
    for x in samples:
        comoment.add(x)
    covariance = np.cov(samples[:, 0, :], rowvar=False)
    mu = np.trace(covariance) / 12
    rhs = rng.normal(size=(3, 1, 12))
    got = ExactCovariance(comoment, "mean_eigenvalue").solve(rhs)[:, 0, :]
    # rho = 1/2: half of (S + mu I), so twice its inverse.
    expected = 2 * np.linalg.solve(covariance + mu * np.eye(12), rhs[:, 0, :].T).T
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_oas_shrinks_more_when_samples_are_few() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(2000, 10)) * np.linspace(0.5, 3.0, 10)
    few, many = oas_reference(data[:12])[1], oas_reference(data)[1]
    covariance = np.cov(data[:12], rowvar=False)
    ours = oas_shrinkage(float(np.trace(covariance)), float(np.sum(covariance**2)), 10, 12)
    assert ours == pytest.approx(few, rel=1e-12)
    assert few > many
