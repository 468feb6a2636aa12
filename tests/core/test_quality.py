"""quality.py: separation, cross-talk and layer ranking recover planted answers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.changes import Entry, StoreEntry, Write
from amygdala_daemon.core.config import ConceptsConfig, LabelsConfig
from amygdala_daemon.core.evaluation import cross_validate, evaluate
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.quality import (
    auroc,
    cohens_d,
    cooccurrence,
    cosine_matrix,
    flag_pairs,
    quality_summary,
    recommend_layers,
    rule_of_thumb_layers,
)
from amygdala_daemon.core.sampling import held_out_bucket
from amygdala_daemon.core.vectors import calibrate
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import refold
from amygdala_daemon.views.layers import MemoryEntries, score_layers

LABELS = LabelsConfig()


def pairwise_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """The definition: the share of (positive, negative) pairs ranked right, ties one half."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    for trial in range(30):
        # Small integers make ties common; the shift makes some trials lopsided.
        pos = rng.integers(0, 6, size=rng.integers(1, 25)).astype(float) + trial % 3
        neg = rng.integers(0, 6, size=rng.integers(1, 25)).astype(float)
        assert auroc(pos, neg) == pytest.approx(pairwise_auroc(pos, neg), abs=1e-12)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    assert math.isnan(auroc([], [1.0])) and math.isnan(auroc([1.0], []))


def test_cohens_d_uses_the_pooled_standard_deviation() -> None:
    # Both groups have sample variance 1, so d is the difference of means.
    assert cohens_d([1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]) == pytest.approx(2.0)
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(1.0, 2.0, 40), rng.normal(0.0, 1.0, 70)
    pooled = math.sqrt((39 * pos.var(ddof=1) + 69 * neg.var(ddof=1)) / 108)
    assert cohens_d(pos, neg) == pytest.approx((pos.mean() - neg.mean()) / pooled)
    assert math.isnan(cohens_d([1.0], []))
    assert math.isnan(cohens_d([1.0, 1.0], [1.0, 1.0]))


def planted_entries(
    n: int, n_layers: int, hidden: int, planted_layer: int, strength: float, seed: int = 0
) -> tuple[list[Entry], np.ndarray]:
    """Nodes tagged joy:9 or calm:9 at random; joy's positives carry +strength along `axis`
    at `planted_layer` only. Content avoids the concept words, so no mention exclusions."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=hidden)
    axis /= np.linalg.norm(axis)
    entries = []
    for i in range(n):
        joyful = i % 3 == 0
        activations = rng.normal(size=(n_layers, hidden)) + 5.0  # a shared offset, as in LMs
        if joyful:
            activations[planted_layer] += strength * axis
        tags = {"joy": 9.0} if joyful else {"calm": 9.0}
        content = f"node number {i} with enough words to pass the content length rule"
        entries.append(Entry(i, f"node-{i}", tags, content, activations.astype(np.float32)))
    return entries, axis


def fold_of(entries: list[Entry], shape: tuple[int, int]) -> Accumulators:
    names = {name for e in entries for name in e.tags}
    return Accumulators.from_entries(entries, names, shape, LABELS, 0)


def test_cross_validate_equals_refitting_without_each_bucket() -> None:
    """Chan's subtraction gives the same held-out scores as a plain refit per bucket."""
    entries, _ = planted_entries(90, 2, 8, planted_layer=1, strength=3.0)
    fold = fold_of(entries, (2, 8))
    scores = cross_validate(fold, MemoryEntries(entries), ["joy"], "mean_diff", 90)["joy"]
    expected_pos: list[np.ndarray] = []
    expected_neg: list[np.ndarray] = []
    for bucket in range(5):
        train = [e for e in entries if held_out_bucket(e.node_id) != bucket]
        held = [e for e in entries if held_out_bucket(e.node_id) == bucket]
        pos_mean = np.mean([e.activations for e in train if "joy" in e.tags], axis=0, dtype=float)
        neg_mean = np.mean(
            [e.activations for e in train if "joy" not in e.tags], axis=0, dtype=float
        )
        diff = pos_mean - neg_mean
        unit = diff / np.linalg.norm(diff, axis=1, keepdims=True)
        midpoint = np.einsum("lh,lh->l", (pos_mean + neg_mean) / 2, unit)
        for e in held:
            score = np.einsum("lh,lh->l", e.activations.astype(float), unit) - midpoint
            (expected_pos if "joy" in e.tags else expected_neg).append(score)
    assert scores.positive.shape == (30, 2) and scores.negative.shape == (60, 2)
    # Order within a class does not matter to any statistic; compare sorted per layer.
    np.testing.assert_allclose(
        np.sort(scores.positive, axis=0), np.sort(np.array(expected_pos), axis=0), atol=1e-9
    )
    np.testing.assert_allclose(
        np.sort(scores.negative, axis=0), np.sort(np.array(expected_neg), axis=0), atol=1e-9
    )


def test_planted_direction_separates_only_where_planted() -> None:
    entries, _ = planted_entries(300, 3, 16, planted_layer=1, strength=4.0)
    fold = fold_of(entries, (3, 16))
    scores = cross_validate(fold, MemoryEntries(entries), ["joy", "calm"], "mean_diff", 300)
    joy = scores["joy"]
    assert joy.positive.shape[0] == 100 and joy.negative.shape[0] == 200
    assert joy.auroc(1) > 0.97
    # Strength 4 against unit noise: d is about 4, less what fitting 16 dims on 240 costs.
    assert 3.0 < joy.cohens_d(1) < 4.5
    for unplanted in (0, 2):
        assert 0.3 < joy.auroc(unplanted) < 0.7
        assert abs(joy.cohens_d(unplanted)) < 0.5
    summary = quality_summary(scores, ["joy", "calm", "ghost"], [10, 11, 12])
    assert summary["auroc"]["joy"]["11"] == pytest.approx(joy.auroc(1))
    assert summary["auroc"]["ghost"] == {"10": None, "11": None, "12": None}


def test_calibration_recovers_the_planted_projection_statistics(tmp_path: Path) -> None:
    """The publisher's calibration path (ledger sample -> spread -> calibrate) on planted data."""
    rng = np.random.default_rng(3)
    hidden, n = 32, 600
    unit = rng.normal(size=hidden)
    unit /= np.linalg.norm(unit)
    # Along `unit`: positives at 6 +- 2, negatives at 1 +- 0.5; noise across it is irrelevant.
    across = rng.normal(size=(2 * n, hidden))
    across -= np.outer(across @ unit, unit)
    along = np.concatenate([rng.normal(6.0, 2.0, n), rng.normal(1.0, 0.5, n)])
    activations = (across + np.outer(along, unit)).astype(np.float32)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    writes: list[Write] = [
        StoreEntry(
            f"node-{i}",
            f"hash-{i}",
            None,
            None,
            {"joy": 9.0} if i < n else {"calm": 9.0},
            f"node number {i} with enough words to pass the content length rule",
            0,
            activations[i : i + 1],
            10,
            False,
        )
        for i in range(2 * n)
    ]
    ledger.apply(writes)
    fold = refold(ledger, (1, hidden), LABELS)
    measured = evaluate(fold, ledger, ["joy"], "mean_diff", 5000, unit[None, None, :])
    pos_std, neg_std = measured.pos_std, measured.neg_std
    calibration = calibrate(
        unit,
        fold.positive["joy"].mean[0],
        fold.negatives("joy").mean[0],
        pos_std[0, 0],
        neg_std[0, 0],
    )
    ledger.close()
    projections = activations.astype(np.float64) @ unit
    # Exact against the plain two-pass statistics of the projections ...
    assert calibration.pos_mean == pytest.approx(projections[:n].mean(), abs=1e-9)
    assert calibration.pos_std == pytest.approx(projections[:n].std(ddof=1), rel=1e-9)
    assert calibration.neg_mean == pytest.approx(projections[n:].mean(), abs=1e-9)
    assert calibration.neg_std == pytest.approx(projections[n:].std(ddof=1), rel=1e-9)
    # ... and close to what was planted.
    assert calibration.pos_mean == pytest.approx(6.0, abs=0.25)
    assert calibration.pos_std == pytest.approx(2.0, rel=0.1)
    assert calibration.neg_mean == pytest.approx(1.0, abs=0.06)
    assert calibration.neg_std == pytest.approx(0.5, rel=0.1)


def test_crosstalk_and_cooccurrence_known_answers() -> None:
    angle = math.radians(60)
    rows = np.array(
        [
            [1.0, 0.0, 0.0],
            [math.cos(angle) * 3, math.sin(angle) * 3, 0.0],  # any length: cosine ignores it
            [-2.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    matrix = cosine_matrix(rows)
    assert matrix[0, 1] == pytest.approx(0.5) and matrix[1, 0] == pytest.approx(0.5)
    assert matrix[0, 2] == pytest.approx(-1.0)
    assert matrix[1, 2] == pytest.approx(-0.5)
    assert matrix[0, 0] == 1.0 and matrix[1, 1] == 1.0 and matrix[2, 2] == 1.0
    assert np.isnan(matrix[3]).all() and np.isnan(matrix[:, 3]).all()
    names = ["joy", "warmth", "grief", "empty"]
    flagged = flag_pairs(names, {7: matrix}, threshold=0.4)
    assert [(p.first, p.second, p.layer) for p in flagged] == [("joy", "warmth", 7)]
    assert flag_pairs(names, {7: matrix}, threshold=0.55) == []
    both, jaccard = cooccurrence(
        ["joy", "warmth", "grief"], {"joy": {"a", "b", "c"}, "warmth": {"b", "c", "d"}}
    )
    assert both[0, 1] == 2 and both[0, 0] == 3 and both[0, 2] == 0
    assert jaccard[0, 1] == pytest.approx(2 / 4) and jaccard[2, 2] == 0.0


def test_recommended_layers_are_the_best_and_spread_out() -> None:
    scores = {0: 0.6, 1: 0.7, 2: 0.72, 3: 0.9, 4: 0.95, 5: 0.93, 6: 0.8, 7: 0.85, 8: 0.5, 9: 0.88}
    chosen = recommend_layers(scores)
    assert chosen == [4, 9, 1]
    for a, b in itertools.combinations(chosen, 2):
        assert abs(a - b) >= 3
    assert recommend_layers(scores, max_layers=1) == [4]
    assert recommend_layers({0: math.nan, 1: 0.6}) == [1]
    assert rule_of_thumb_layers(30) == [18, 19, 20, 21, 22, 23]
    assert rule_of_thumb_layers(4) == [2]


def test_layer_sweep_ranks_the_planted_layer_first() -> None:
    """The ranking the `layers` command prints, on activations with one informative layer."""
    n_layers = 12
    entries, _ = planted_entries(240, n_layers, 24, planted_layer=7, strength=2.5, seed=5)
    # A weaker echo two blocks on: the best layer must still win, and its neighbour be skipped.
    rng = np.random.default_rng(6)
    echo = rng.normal(size=24)
    echo /= np.linalg.norm(echo)
    for entry in entries:
        if "joy" in entry.tags:
            entry.activations[9] += np.float32(1.2) * echo.astype(np.float32)
    result = score_layers(
        entries, list(range(n_layers)), LABELS, ConceptsConfig(), method="mean_diff"
    )
    assert result["recommended"][0] == 7
    assert 8 not in result["recommended"] and 9 not in result["recommended"]
    by_layer = result["mean_auroc"]
    assert by_layer["7"] == max(v for v in by_layer.values() if v is not None)
    joy = next(c for c in result["concepts"] if c["name"] == "joy")
    assert joy["auroc"]["7"] > 0.95 and joy["n_pos"] == 80 and joy["n_neg"] == 160
