"""Labeling: which concepts a node is a positive for, and which it is kept out of negatives for.

Pure functions. A node costs O(its tags + its words), never O(all concepts): negatives are
"every eligible node" minus the ones excluded, so only exclusions are listed per node.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from amygdala_daemon.core.config import LabelsConfig

_WORD = re.compile(r"\w+")
_SIMPLE_NAME = re.compile(r"\w+")


@dataclass(frozen=True)
class NodeLabels:
    """What one eligible node contributes, given the concepts known at the time."""

    positive: frozenset[str]
    excluded_from_negatives: frozenset[str]


def is_eligible(tags: dict[str, float], content: str, settings: LabelsConfig) -> bool:
    """At least one valid tag and enough content to be an example."""
    return bool(tags) and len(content) >= settings.min_content_chars


def word_counts(content: str) -> Counter[str]:
    """Whole-word counts, lower-cased; the fast path for concept names made of word chars."""
    return Counter(match.lower() for match in _WORD.findall(content))


def mention_count(content: str, concept: str, words: Counter[str] | None = None) -> int:
    """How often `concept` occurs in `content` as a whole word, case-insensitively.

    >>> mention_count("Joy, joy! Joyful.", "joy")
    2
    """
    if _SIMPLE_NAME.fullmatch(concept):
        return (words if words is not None else word_counts(content))[concept]
    # Names with '-' cannot come from the \\w+ split; match them as a regex word.
    pattern = re.compile(rf"(?<!\w){re.escape(concept)}(?!\w)", re.IGNORECASE)
    return len(pattern.findall(content))


class KnownConcepts:
    """The concepts a fold knows, indexed for O(words) mention checks."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.compound: list[str] = []
        for name in names:
            self.add(name)

    def add(self, name: str) -> bool:
        """Add `name`; True when it was new."""
        if name in self.names:
            return False
        self.names.add(name)
        if not _SIMPLE_NAME.fullmatch(name):
            self.compound.append(name)
        return True

    def discard(self, name: str) -> None:
        """Forget `name` (no live node carries it any more)."""
        if name in self.names:
            self.names.discard(name)
            if name in self.compound:
                self.compound.remove(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)


def label_node(
    tags: dict[str, float],
    content: str,
    known: KnownConcepts,
    settings: LabelsConfig,
) -> NodeLabels:
    """Positives and exclusions of one eligible node.

    A node is excluded from E's negatives when it is tagged E (unless `max_negative_score`
    is set and the score is at or below it), or mentions E more than `max_negative_mentions`
    times. `known` is every concept the fold knows, so mentions of concepts the node is not
    tagged with still count.
    """
    positive = frozenset(
        name for name, score in tags.items() if score >= settings.min_positive_score
    )
    excluded: set[str] = set()
    for name, score in tags.items():
        if settings.max_negative_score is None or score > settings.max_negative_score:
            excluded.add(name)
    limit = settings.max_negative_mentions
    words = word_counts(content)
    for word, count in words.items():
        if count > limit and word in known:
            excluded.add(word)
    for concept in known.compound:
        if concept not in excluded and mention_count(content, concept) > limit:
            excluded.add(concept)
    return NodeLabels(positive=positive, excluded_from_negatives=frozenset(excluded))
