"""Which concepts are published, in which row order: pure decisions over counts."""

from __future__ import annotations

from dataclasses import dataclass

from amygdala_daemon.core.config import ConceptsConfig


@dataclass(frozen=True)
class Selection:
    """Row order of the published tensors, and why every other concept was left out."""

    rows: list[str]
    unpublished: dict[str, str]


def select_concepts(
    counts: dict[str, tuple[int, int]], registry: list[str], config: ConceptsConfig
) -> Selection:
    """Choose the published concepts.

    `counts` maps concept to (n_pos, n_neg). Concepts already in `registry` keep their row
    (an append-only registry: consumers may log by index); new ones are appended, most
    positives first, up to `max_concepts`.
    """
    include = set(config.include)
    exclude = set(config.exclude)
    unpublished: dict[str, str] = {}
    candidates: list[tuple[int, str]] = []
    for name, (n_pos, n_neg) in counts.items():
        if name in registry:
            continue
        if name in exclude:
            unpublished[name] = "excluded by concepts.exclude"
        elif include and name not in include:
            unpublished[name] = "not in concepts.include"
        elif n_pos < config.min_positive:
            unpublished[name] = f"{n_pos} positives, fewer than concepts.min_positive"
        elif n_neg < config.min_negative:
            unpublished[name] = f"{n_neg} negatives, fewer than concepts.min_negative"
        else:
            candidates.append((n_pos, name))
    rows = list(registry)
    for _, name in sorted(candidates, key=lambda c: (-c[0], c[1])):
        if len(rows) >= config.max_concepts:
            unpublished[name] = "concepts.max_concepts reached"
        else:
            rows.append(name)
    return Selection(rows=rows, unpublished=unpublished)
