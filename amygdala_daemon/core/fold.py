"""Per-concept accumulators: a fold over the ledger's changes, as plain arithmetic.

One global accumulator counts every eligible entry; each concept keeps its positives and the
entries excluded from its negatives, so `negatives(E) = global - excluded(E)`.

Invariant: after the fold has applied every ledger change up to `ledger_seq`, `excluded[E]` is
exactly the eligible live entries tagged E (above `max_negative_score`) or mentioning E too
often, for every known E. A concept first seen mid-stream is initialised by scanning the
entries live at that point, so retracting an entry later always undoes exactly what adding it
did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from amygdala_daemon.core.changes import Change, Entry
from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.labels import KnownConcepts, is_eligible, label_node, mention_count
from amygdala_daemon.core.stats import Welford


def fold_fingerprint(labels: LabelsConfig, shape: tuple[int, int]) -> str:
    """What the fold depends on besides the ledger; a mismatch means refold."""
    return json.dumps({"labels": asdict(labels), "shape": list(shape)}, sort_keys=True)


@dataclass
class ConceptCounts:
    name: str
    n_pos: int
    n_neg: int


@dataclass
class Accumulators:
    """The fold's state: pure arithmetic over the changes and activations it is given."""

    shape: tuple[int, int]
    labels: LabelsConfig
    ledger_seq: int = 0
    total: Welford = field(init=False)
    positive: dict[str, Welford] = field(default_factory=dict)
    excluded: dict[str, Welford] = field(default_factory=dict)
    known: KnownConcepts = field(default_factory=KnownConcepts)

    def __post_init__(self) -> None:
        self.total = Welford.empty(self.shape)

    @property
    def concepts(self) -> list[str]:
        return sorted(self.positive)

    def negatives(self, concept: str) -> Welford:
        return self.total.subtract(self.excluded[concept])

    def counts(self) -> list[ConceptCounts]:
        return [
            ConceptCounts(
                name, self.positive[name].count, self.total.count - self.excluded[name].count
            )
            for name in self.concepts
        ]

    def unseen_concepts(self, entry: Entry) -> list[str]:
        """Tags of an eligible `entry` the fold does not track yet: seed each before `apply`."""
        if not is_eligible(entry.tags, entry.content, self.labels):
            return []
        return [name for name in entry.tags if name not in self.known]

    def add_concept(self, name: str, seeds: Iterable[Entry]) -> None:
        """Start tracking `name`, seeding its exclusions from `seeds`: the entries live now.

        Retracting an entry later then undoes exactly what adding it did.
        """
        self.known.add(name)
        self.positive[name] = Welford.empty(self.shape)
        excluded = Welford.empty(self.shape)
        for entry in seeds:
            if not is_eligible(entry.tags, entry.content, self.labels):
                continue
            if mention_count(entry.content, name) > self.labels.max_negative_mentions:
                excluded.add(entry.activations)
        self.excluded[name] = excluded

    def apply(self, change: Change) -> None:
        """Fold one ledger change in; every concept it tags must be tracked already."""
        entry = change.entry
        self.ledger_seq = max(self.ledger_seq, change.seq)
        if not is_eligible(entry.tags, entry.content, self.labels):
            return
        unseen = self.unseen_concepts(entry)
        if unseen:
            raise ValueError(f"concepts {unseen} must be added (with seeds) before this change")
        labels = label_node(entry.tags, entry.content, self.known, self.labels)
        step = _add if change.sign > 0 else _remove
        step(self.total, entry.activations)
        for name in labels.positive:
            step(self.positive[name], entry.activations)
        for name in labels.excluded_from_negatives:
            step(self.excluded[name], entry.activations)

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[Entry],
        concepts: Iterable[str],
        shape: tuple[int, int],
        labels: LabelsConfig,
        ledger_seq: int,
    ) -> Accumulators:
        """Fold a set of live entries from scratch, with every concept known up front."""
        fold = cls(shape, labels, ledger_seq)
        for name in sorted(set(concepts)):
            fold.add_concept(name, ())
        for entry in entries:
            fold.apply(Change(ledger_seq, 1, entry))
        fold.ledger_seq = ledger_seq
        return fold


def _add(accumulator: Welford, sample: np.ndarray) -> None:
    accumulator.add(sample)


def _remove(accumulator: Welford, sample: np.ndarray) -> None:
    accumulator.remove(sample)
