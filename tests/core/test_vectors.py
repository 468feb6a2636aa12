"""vectors.py: every direction method against a plain numpy fit, and a planted direction."""

from __future__ import annotations

import numpy as np
import pytest

from amygdala_daemon.core.changes import Change, Entry
from amygdala_daemon.core.config import LabelsConfig, Method, Shrinkage
from amygdala_daemon.core.covariance import ExactCovariance, SampledCovariance
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.vectors import directions, needs_covariance

LABELS = LabelsConfig()
CONTENT = "a journal entry number {} with more than enough words in it to count"


def random_entries(count: int, shape: tuple[int, int], seed: int) -> list[Entry]:
    """Entries tagged with graded scores for `joy` and `calm`; joy shifts along one axis."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=shape)
    entries = []
    for i in range(count):
        tags: dict[str, float] = {}
        if i % 3 == 0:
            tags["joy"] = float(rng.integers(0, 11))
        if i % 4 == 0:
            tags["calm"] = float(rng.integers(0, 11))
        if not tags:
            tags["other"] = 5.0
        x = rng.normal(size=shape) * rng.uniform(0.5, 2.0, size=shape[1])
        x = x + 0.3 * tags.get("joy", 0.0) * axis
        entries.append(Entry(i, f"n{i}", tags, CONTENT.format(i), x.astype(np.float32)))
    return entries


def numpy_reference(entries: list[Entry], name: str, method: Method, rule: Shrinkage) -> np.ndarray:
    """The direction fit from all live samples at once, written out with numpy."""
    x = np.stack([e.activations.astype(np.float64) for e in entries])
    positive = np.array([e.tags.get(name, -1) >= LABELS.min_positive_score for e in entries])
    negative = np.array([name not in e.tags for e in entries])
    out = []
    for layer in range(x.shape[1]):
        samples = x[:, layer, :]
        n, p = samples.shape
        covariance = np.cov(samples, rowvar=False)
        mu = np.trace(covariance) / p
        alpha = np.mean(covariance**2)
        rho = min((alpha + mu**2) / ((n + 1) * (alpha - mu**2 / p)), 1.0) if rule == "oas" else 0.5
        shrunk = (1 - rho) * covariance + rho * mu * np.eye(p)
        if method == "shrinkage_lda":
            rhs = samples[positive].mean(axis=0) - samples[negative].mean(axis=0)
        else:
            y = np.array([e.tags.get(name, 0.0) for e in entries])
            rhs = ((y - y.mean())[:, None] * (samples - samples.mean(axis=0))).sum(0) / (n - 1)
        w = np.linalg.solve(shrunk, rhs)
        out.append(w / np.linalg.norm(w))
    return np.stack(out)


@pytest.mark.parametrize("rule", ["mean_eigenvalue", "oas"])
@pytest.mark.parametrize("method", ["shrinkage_lda", "score_ridge"])
def test_the_fold_with_retractions_gives_the_numpy_direction(
    method: Method, rule: Shrinkage
) -> None:
    shape = (2, 16)
    entries = random_entries(240, shape, seed=3)
    fold = Accumulators(shape, LABELS, covariance=True)
    for name in ("joy", "calm", "other"):
        fold.add_concept(name, ())
    for seq, entry in enumerate(entries, start=1):
        fold.apply(Change(seq, 1, entry))
    # Retract a fifth of them again, as edits and deletes do.
    for seq, entry in enumerate(entries[1::5], start=len(entries) + 1):
        fold.apply(Change(seq, -1, entry))
    live = [e for i, e in enumerate(entries) if i % 5 != 1]
    assert fold.comoment is not None
    got = directions(fold, ["joy", "calm"], method, ExactCovariance(fold.comoment, rule))
    for name in ("joy", "calm"):
        expected = numpy_reference(live, name, method, rule)
        np.testing.assert_allclose(got[name], expected, atol=1e-9)


def test_a_covariance_method_refuses_to_run_without_a_solver() -> None:
    fold = Accumulators((1, 4), LABELS, covariance=True)
    fold.add_concept("joy", ())
    assert needs_covariance("shrinkage_lda") and not needs_covariance("diag_lda")
    with pytest.raises(ValueError, match="solver"):
        directions(fold, ["joy"], "shrinkage_lda", None)


def planted(count: int, seed: int) -> tuple[list[Entry], np.ndarray]:
    """Joy moves the activations along `planted`; a nuisance factor, stronger in joyful texts,
    moves them along a correlated axis, so the mean difference points between the two."""
    rng = np.random.default_rng(seed)
    hidden = 24
    planted_axis = np.zeros(hidden)
    planted_axis[0] = 1.0
    nuisance = np.zeros(hidden)
    nuisance[0], nuisance[1] = 0.2, 0.98
    entries = []
    for i in range(count):
        joyful = i % 2 == 0
        tags = {"joy": 9.0} if joyful else {"calm": 5.0}
        factor = rng.normal() * 4.0 + (3.0 if joyful else 0.0)
        x = (
            rng.normal(size=hidden) * 0.5
            + factor * nuisance
            + (1.0 if joyful else 0.0) * planted_axis
        )
        entries.append(Entry(i, f"p{i}", tags, CONTENT.format(i), x[None, :].astype(np.float32)))
    return entries, planted_axis


@pytest.mark.parametrize("method", ["shrinkage_lda", "score_ridge"])
def test_a_covariance_method_recovers_a_direction_the_mean_difference_misses(
    method: Method,
) -> None:
    entries, planted_axis = planted(4000, seed=5)
    fold = Accumulators.from_entries(entries, {"joy", "calm"}, (1, 24), LABELS, 0, covariance=True)
    assert fold.comoment is not None
    caa = directions(fold, ["joy"], "mean_diff", None)["joy"][0]
    new = directions(fold, ["joy"], method, ExactCovariance(fold.comoment))["joy"][0]
    assert abs(caa @ planted_axis) < 0.6, "the nuisance should confound the mean difference"
    assert new @ planted_axis > 0.95


def test_the_sampled_covariance_recovers_it_too() -> None:
    entries, planted_axis = planted(2000, seed=6)
    fold = Accumulators.from_entries(entries, {"joy", "calm"}, (1, 24), LABELS, 0)
    assert fold.comoment is None
    samples = np.stack([e.activations.astype(np.float64) for e in entries[:512]])
    solver = SampledCovariance(samples, fold.total.mean)
    new = directions(fold, ["joy"], "shrinkage_lda", solver)["joy"][0]
    assert new @ planted_axis > 0.9
