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
from amygdala_daemon.core.covariance import Array, Comoment
from amygdala_daemon.core.labels import KnownConcepts, is_eligible, label_node, mention_count
from amygdala_daemon.core.stats import Welford


def fold_fingerprint(labels: LabelsConfig, shape: tuple[int, int], covariance: bool = False) -> str:
    """What the fold depends on besides the ledger; a mismatch means refold."""
    payload = {"labels": asdict(labels), "shape": list(shape), "covariance": covariance}
    return json.dumps(payload, sort_keys=True)


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
    covariance: bool = False
    """Keep the eligible nodes' full co-moment per layer (for the covariance-aware methods)."""
    comoment: Comoment | None = field(init=False)
    score_sum: dict[str, float] = field(default_factory=dict)
    """Per concept: the sum of its tag scores over eligible nodes (untagged nodes score 0)."""
    score_x: dict[str, Array] = field(default_factory=dict)
    """Per concept: the sum of score * activations `[n_layers, hidden]`, for `score_ridge`."""
    carriers: dict[str, int] = field(default_factory=dict)
    """Per concept: live eligible nodes tagged with it. At 0 the concept is forgotten."""

    def __post_init__(self) -> None:
        self.total = Welford.empty(self.shape)
        self.comoment = Comoment.empty(self.shape) if self.covariance else None

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
        # No live eligible node carries a tag the fold has not seen: the score sums start empty.
        self.score_sum[name] = 0.0
        self.score_x[name] = np.zeros(self.shape)
        self.carriers[name] = 0
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
        if self.comoment is not None:
            step(self.comoment, entry.activations)
        activations = entry.activations.astype(np.float64)
        for name, score in entry.tags.items():
            self.score_sum[name] += change.sign * score
            self.score_x[name] += (change.sign * score) * activations
            self.carriers[name] += change.sign
        for name in labels.positive:
            step(self.positive[name], entry.activations)
        for name in labels.excluded_from_negatives:
            step(self.excluded[name], entry.activations)
        if change.sign < 0:
            for name in entry.tags:
                if self.carriers[name] == 0:
                    self.forget(name)

    def forget(self, name: str) -> None:
        """Stop tracking a concept no live node carries: the fold shrinks back.

        Whatever it held came from nodes that merely mention the word; if the tag comes back,
        `add_concept` seeds it again from the entries live then, as a rebuild would.
        """
        for table in (self.positive, self.excluded, self.score_sum, self.score_x, self.carriers):
            table.pop(name, None)
        self.known.discard(name)

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[Entry],
        concepts: Iterable[str],
        shape: tuple[int, int],
        labels: LabelsConfig,
        ledger_seq: int,
        covariance: bool = False,
    ) -> Accumulators:
        """Fold a set of live entries from scratch, with every concept known up front."""
        fold = cls(shape, labels, ledger_seq, covariance=covariance)
        for name in sorted(set(concepts)):
            fold.add_concept(name, ())
        for entry in entries:
            fold.apply(Change(ledger_seq, 1, entry))
        fold.ledger_seq = ledger_seq
        return fold


def _add(accumulator: Welford | Comoment, sample: np.ndarray) -> None:
    accumulator.add(sample)


def _remove(accumulator: Welford | Comoment, sample: np.ndarray) -> None:
    accumulator.remove(sample)
