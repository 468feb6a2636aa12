"""evaluation.py: the sampled spreads and held-out scores, and when a publish reuses them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from amygdala_daemon.core.changes import Entry
from amygdala_daemon.core.config import LabelsConfig, Method, VectorsConfig
from amygdala_daemon.core.evaluation import (
    MIN_POSITIVES,
    choose_sample,
    cross_validate,
    evaluate,
    evaluation_due,
)
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.sampling import held_out_bucket, sample_key
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.core.vectors import direction
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.views.layers import MemoryEntries
from tests.helpers.generations import check_generation
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl

LABELS = LabelsConfig()
CONTENT = "node number {} with enough words to pass the content length rule"


def entries_with(tags_of: list[dict[str, float]], shape: tuple[int, int], seed: int) -> list[Entry]:
    """One entry per tag set; each tag shifts the activations along its own random axis."""
    rng = np.random.default_rng(seed)
    names = sorted({name for tags in tags_of for name in tags})
    axes = {name: rng.normal(size=shape) for name in names}
    entries = []
    for i, tags in enumerate(tags_of):
        activations = rng.normal(size=shape) * rng.uniform(0.5, 2.0, size=shape[1]) + 3.0
        for name in tags:
            activations = activations + 2.0 * axes[name]
        entries.append(
            Entry(i, f"node-{i}", tags, CONTENT.format(i), activations.astype(np.float32))
        )
    return entries


def fold_of(entries: list[Entry], shape: tuple[int, int]) -> Accumulators:
    names = {name for e in entries for name in e.tags}
    return Accumulators.from_entries(entries, names, shape, LABELS, 0)


def welford_of(entries: list[Entry]) -> Welford:
    stats = Welford.empty(entries[0].activations.shape)
    for entry in entries:
        stats.add(entry.activations)
    return stats


@pytest.mark.parametrize("method", ["mean_diff", "diag_lda"])
def test_held_out_scores_equal_a_refit_without_each_bucket(method: Method) -> None:
    """The subtraction of bucket sums gives what a plain refit on the other buckets gives."""
    tags_of = [{"joy": 9.0} if i % 3 == 0 else {"calm": 9.0, "awe": 8.0} for i in range(120)]
    entries = entries_with(tags_of, (3, 12), seed=4)
    fold = fold_of(entries, (3, 12))
    scores = cross_validate(fold, MemoryEntries(entries), ["joy", "awe"], method, 120)
    for name in ("joy", "awe"):
        expected: dict[bool, list[np.ndarray]] = {True: [], False: []}
        for bucket in range(5):
            train = [e for e in entries if held_out_bucket(e.node_id) != bucket]
            pos = welford_of([e for e in train if name in e.tags])
            neg = welford_of([e for e in train if name not in e.tags])
            unit = direction(pos, neg, method)
            midpoint = (
                np.einsum("lh,lh->l", pos.mean, unit) + np.einsum("lh,lh->l", neg.mean, unit)
            ) / 2
            for e in entries:
                if held_out_bucket(e.node_id) == bucket:
                    score = np.einsum("lh,lh->l", e.activations.astype(float), unit) - midpoint
                    expected[name in e.tags].append(score)
        for positive, got in ((True, scores[name].positive), (False, scores[name].negative)):
            want = np.array(expected[positive])
            assert got.shape == want.shape
            np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0), atol=1e-9)


def test_a_rare_concept_gets_extra_positives_scored_for_it_alone() -> None:
    # 400 nodes; "awe" on 13 of them only. A prefix of 100 holds about three of those.
    tags_of = [
        # awe always comes with joy: scoring awe's extras for joy would skew joy's sample.
        {"awe": 9.0, "joy": 9.0} if i % 33 == 0 else {"joy": 9.0} if i % 2 else {"calm": 9.0}
        for i in range(400)
    ]
    entries = entries_with(tags_of, (2, 10), seed=5)
    fold = fold_of(entries, (2, 10))
    store = MemoryEntries(entries)
    size = 100
    sample = choose_sample(store, fold, ["awe", "joy"], size)
    by_hash = sorted(entries, key=lambda e: sample_key(e.node_id))
    assert sample.prefix == {e.node_id for e in by_hash[:size]}
    awe = [e for e in by_hash if "awe" in e.tags]
    assert len(awe) == 13 < MIN_POSITIVES
    prefix = by_hash[:size]
    assert sum("joy" in e.tags for e in prefix) >= MIN_POSITIVES
    chosen = {node_id for ids in sample.buckets.values() for node_id in ids}
    # Every awe node joins (fewer than MIN_POSITIVES exist); joy has enough in the prefix.
    assert chosen == sample.prefix | {e.node_id for e in awe}
    for bucket, ids in sample.buckets.items():
        assert all(held_out_bucket(node_id) == bucket for node_id in ids)

    units = np.stack(
        [direction(fold.positive[n], fold.negatives(n), "mean_diff") for n in ("awe", "joy")]
    )
    measured = evaluate(fold, store, ["awe", "joy"], "mean_diff", size, units)
    assert measured.sampled == len(chosen)
    assert len(measured.scores["awe"].positive) == 13, "every awe node scored as a positive"
    assert len(measured.scores["awe"].negative) == sum("awe" not in e.tags for e in prefix)
    assert len(measured.scores["joy"].positive) == sum("joy" in e.tags for e in prefix)
    assert len(measured.scores["joy"].negative) == sum("joy" not in e.tags for e in prefix)

    def spread(members: list[Entry], row: int) -> np.ndarray:
        projections = np.stack(
            [np.einsum("lh,lh->l", e.activations.astype(float), units[row]) for e in members]
        )
        deviations: np.ndarray = projections.std(axis=0, ddof=1)
        return deviations

    np.testing.assert_allclose(measured.pos_std[0], spread(awe, 0), rtol=1e-9)
    np.testing.assert_allclose(
        measured.neg_std[0], spread([e for e in prefix if "awe" not in e.tags], 0), rtol=1e-9
    )
    np.testing.assert_allclose(
        measured.pos_std[1], spread([e for e in prefix if "joy" in e.tags], 1), rtol=1e-9
    )


def test_evaluation_due_names_its_reason() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    settings = VectorsConfig(evaluate_every=600.0, evaluate_after_changes=0.1)
    previous = {
        "settings_fingerprint": "f",
        "registry_epoch": "1",
        "calibration": {"joy": {}, "calm": {}},
        "quality": {"auroc": {"joy": {}, "calm": {}}},
        "evaluation": {"ledger_seq": 100, "at": (now - timedelta(seconds=60)).isoformat()},
    }
    current = {
        "concepts": ["joy", "calm"],
        "stale": [],
        "ledger_seq": 150,
        "settings_fingerprint": "f",
        "registry_epoch": "1",
    }
    assert evaluation_due(previous, current, 1000, settings, now) is None
    assert evaluation_due(None, current, 1000, settings, now) == "no earlier generation"
    reasons = {
        "moved": evaluation_due(previous, current, 400, settings, now),
        "old": evaluation_due(previous, current, 1000, settings, now + timedelta(seconds=600)),
        "concept": evaluation_due(
            previous, {**current, "concepts": ["joy", "calm", "awe"]}, 1000, settings, now
        ),
        "settings": evaluation_due(
            previous, {**current, "settings_fingerprint": "g"}, 1000, settings, now
        ),
        "rebuilt": evaluation_due(
            previous, {**current, "registry_epoch": "2"}, 1000, settings, now
        ),
        "always": evaluation_due(
            previous, current, 1000, replace(settings, evaluate_every=0.0), now
        ),
        "missing": evaluation_due({**previous, "evaluation": None}, current, 1000, settings, now),
        "stale": evaluation_due(previous, {**current, "stale": ["calm"]}, 1000, settings, now),
    }
    assert reasons == {
        "moved": "50 ledger changes since the last evaluation, against 400 nodes",
        "old": "the last evaluation is 660 s old",
        "concept": "1 concept(s) not yet evaluated, such as 'awe'",
        "settings": "settings_fingerprint changed",
        "rebuilt": "registry_epoch changed",
        "always": "the last evaluation is 60 s old",
        "missing": "the last generation carries no evaluation",
        "stale": "the stale concepts changed",
    }


def test_publish_carries_the_evaluation_over_until_it_is_due(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()
    later = [n for n in nodes if "\nanxiety:9" in n["text"]][:5]
    graph = write_jsonl(tmp_path / "graph.jsonl", [n for n in nodes if n not in later])
    config = make_config(tmp_path / "s", graph, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        first = check_generation(config.state_path / "published/current")
        assert first["evaluation"]["reason"] == "forced"
        assert first["evaluation"]["ledger_seq"] == first["ledger_seq"]

        # Five more nodes: far under 10% of the graph, and well inside ten minutes.
        write_jsonl(graph, nodes)
        engine.sync(open_source(config.source))
        engine.publish()
        second = check_generation(config.state_path / "published/current")
        assert second["ledger_seq"] > first["ledger_seq"]
        assert second["evaluation"] == first["evaluation"]
        assert second["quality"] == first["quality"]
        moved = [n for n in second["counts"] if second["counts"][n] != first["counts"][n]]
        assert "anxiety" in moved
        for name in moved:
            now, before = second["calibration"][name]["2"], first["calibration"][name]["2"]
            assert now["pos_std"] == before["pos_std"] and now["neg_std"] == before["neg_std"]
            assert (now["pos_mean"], now["neg_mean"]) != (before["pos_mean"], before["neg_mean"])

        # Drop a fifth of the graph: past evaluate_after_changes, so measured again.
        write_jsonl(graph, nodes[: len(nodes) * 4 // 5])
        engine.sync(open_source(config.source))
        engine.publish()
        third = check_generation(config.state_path / "published/current")
        assert third["evaluation"]["ledger_seq"] == third["ledger_seq"]
        assert "ledger changes since the last evaluation" in third["evaluation"]["reason"]
        assert engine.fold is not None
        fresh = cross_validate(
            engine.fold,
            engine.ledger,
            third["concepts"],
            config.vectors.method,
            config.vectors.evaluation_sample,
        )
        for name in third["concepts"]:
            for i, layer in enumerate(third["layers"]):
                assert third["quality"]["auroc"][name][str(layer)] == pytest.approx(
                    fresh[name].auroc(i)
                )
    finally:
        engine.close()


def test_a_forced_publish_measures_again_and_gets_the_same(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    config = make_config(tmp_path / "s", graph_path, tiny_model_dir)
    engine = Engine(config)
    try:
        engine.rebuild(open_source(config.source))
        first = check_generation(config.state_path / "published/current")
        assert engine.publish() is None, "nothing changed"
        engine.publish(force=True)
        forced = check_generation(config.state_path / "published/current")
    finally:
        engine.close()
    assert forced["generation"] == first["generation"] + 1
    assert forced["evaluation"]["reason"] == "forced"
    assert forced["evaluation"]["at"] >= first["evaluation"]["at"]
    assert forced["quality"] == first["quality"], "the same ledger measures the same"
    assert forced["calibration"] == first["calibration"]
