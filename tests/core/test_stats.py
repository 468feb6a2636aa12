from __future__ import annotations

import numpy as np
import pytest

from amygdala_daemon.core.stats import Welford


def reference(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass mean and sum of squared deviations."""
    mean = samples.mean(axis=0)
    return mean, ((samples - mean) ** 2).sum(axis=0)


def filled(samples: np.ndarray) -> Welford:
    acc = Welford.empty(samples.shape[1:])
    for sample in samples:
        acc.add(sample)
    return acc


@pytest.fixture
def samples() -> np.ndarray:
    rng = np.random.default_rng(7)
    # Offset and scale like residual-stream activations, to exercise cancellation.
    return rng.normal(50.0, 3.0, size=(200, 3, 16)).astype(np.float32)


def test_add_matches_two_pass(samples: np.ndarray) -> None:
    acc = filled(samples)
    mean, m2 = reference(samples.astype(np.float64))
    assert acc.count == 200
    np.testing.assert_allclose(acc.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(acc.m2, m2, rtol=1e-9)


def test_remove_undoes_add(samples: np.ndarray) -> None:
    acc = filled(samples)
    for sample in samples[150:]:
        acc.remove(sample)
    mean, m2 = reference(samples[:150].astype(np.float64))
    np.testing.assert_allclose(acc.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(acc.m2, m2, rtol=1e-9)
    for sample in samples[:150]:
        acc.remove(sample)
    assert acc.count == 0 and not acc.mean.any() and not acc.m2.any()
    with pytest.raises(ValueError):
        acc.remove(samples[0])


def test_merge_and_subtract_are_inverse(samples: np.ndarray) -> None:
    left, right = filled(samples[:80]), filled(samples[80:])
    union = left.copy()
    union.merge(right)
    mean, m2 = reference(samples.astype(np.float64))
    np.testing.assert_allclose(union.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(union.m2, m2, rtol=1e-9)
    rest = union.subtract(right)
    assert rest.count == 80
    np.testing.assert_allclose(rest.mean, left.mean, rtol=1e-10)
    np.testing.assert_allclose(rest.m2, left.m2, rtol=1e-7)
    assert union.subtract(union).count == 0
    with pytest.raises(ValueError):
        left.subtract(union)


def test_variance(samples: np.ndarray) -> None:
    acc = filled(samples)
    np.testing.assert_allclose(
        acc.variance(), samples.astype(np.float64).var(axis=0, ddof=1), rtol=1e-9
    )
    assert not Welford.empty((2,)).variance().any()
