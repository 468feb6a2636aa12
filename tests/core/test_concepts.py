"""concepts.py: which concepts get a row, in what order, and why the others do not."""

from __future__ import annotations

from amygdala_daemon.core.concepts import select_concepts
from amygdala_daemon.core.config import ConceptsConfig


def test_concept_selection() -> None:
    counts = {
        "joy": (30, 200),
        "calm": (4, 200),
        "awe": (12, 3),
        "pride": (9, 100),
        "fear": (50, 90),
    }
    chosen = select_concepts(counts, ["pride"], ConceptsConfig(exclude=["fear"]))
    assert chosen.rows == ["pride", "joy"]
    assert chosen.unpublished == {
        "calm": "4 positives, fewer than concepts.min_positive",
        "awe": "3 negatives, fewer than concepts.min_negative",
        "fear": "excluded by concepts.exclude",
    }
    capped = select_concepts(counts, [], ConceptsConfig(max_concepts=1, include=["joy", "fear"]))
    assert capped.rows == ["fear"]
    assert capped.unpublished["joy"] == "concepts.max_concepts reached"
    assert capped.unpublished["pride"] == "not in concepts.include"
