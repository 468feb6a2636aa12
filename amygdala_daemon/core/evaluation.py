"""The sampled evaluation of the vectors: projection spread and held-out quality, one read.

The accumulators give exact projection means, but a projection's spread needs the
covariance, and a held-out AUROC needs each node's own score: both are measured on stored
activations. One deterministic sample serves both, so the ledger is read once:

- the *prefix*: the first `size` eligible nodes in sha256(node id) order, scored as
  positives and negatives for every concept;
- the *extras*: for a concept with fewer than `MIN_POSITIVES` positives in the prefix, its
  next positives in the same order, up to that many. They are scored for that concept only,
  so a rare concept in a large graph still gets a spread and an AUROC, at a bounded cost.

Held out: bucket k = sha256(node id) mod `N_FOLDS`. Bucket k's sampled nodes are scored on
directions fit on the fold minus those nodes. The fit works on sums, so leaving a bucket
out is a subtraction, done for every concept at once. Scores are centred on the training
midpoint between the class means, so scores from different buckets share one scale.

All of this costs two projections of every sampled node onto every concept and layer, which
is why a publish reuses the last evaluation until `evaluation_due` says it is out of date.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.covariance import Solver
from amygdala_daemon.core.held_out import Batch, HeldOutFit, Sample
from amygdala_daemon.core.labels import is_eligible, label_node
from amygdala_daemon.core.quality import Scores
from amygdala_daemon.core.sampling import N_FOLDS, sample_key

if TYPE_CHECKING:
    from amygdala_daemon.core.changes import Entry
    from amygdala_daemon.core.config import Method, VectorsConfig
    from amygdala_daemon.core.fold import Accumulators

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

# Enough positives for a spread and an AUROC that mean something, few enough that 200 rare
# concepts cost 6,400 extra reads at most.
MIN_POSITIVES = 32


class EntryStore(Protocol):
    """Where stored activations come from (the ledger, or a sample held in memory)."""

    def live_labels(self) -> Iterator[tuple[str, dict[str, float], str]]: ...

    def sample_live_entries(self, node_ids: list[str]) -> Iterator[Entry]: ...


# -- the sample -----------------------------------------------------------------------------


def choose_sample(
    store: EntryStore, fold: Accumulators, concepts: Sequence[str], size: int
) -> Sample:
    """The prefix of `size` eligible nodes by hash, plus extras for rare concepts."""
    keyed = sorted(
        (sample_key(node_id), node_id, tags, content)
        for node_id, tags, content in store.live_labels()
        if is_eligible(tags, content, fold.labels)
    )
    prefix = keyed[:size]
    wanted = set(concepts)
    found = dict.fromkeys(wanted, 0)
    for _, _, tags, content in prefix:
        for name in label_node(tags, content, fold.known, fold.labels).positive & wanted:
            found[name] += 1
    short = {name: MIN_POSITIVES - n for name, n in found.items() if n < MIN_POSITIVES}
    chosen = [(key, node_id) for key, node_id, _, _ in prefix]
    extras: dict[str, frozenset[str]] = {}
    for key, node_id, tags, content in keyed[size:]:
        if not short:
            break
        rare = label_node(tags, content, fold.known, fold.labels).positive & short.keys()
        if not rare:
            continue
        chosen.append((key, node_id))
        extras[node_id] = frozenset(rare)
        for name in rare:
            short[name] -= 1
            if short[name] == 0:
                del short[name]
    buckets: dict[int, list[str]] = {k: [] for k in range(N_FOLDS)}
    for key, node_id in chosen:
        buckets[int(key, 16) % N_FOLDS].append(node_id)
    return Sample(buckets, frozenset(node_id for _, node_id, _, _ in prefix), extras)


def project(batch: Batch, units: Array, columns: Sequence[int]) -> Array:
    """Projections `[n, len(columns), n_layers]` of the batch onto `units` (one per column).

    Prefix rows get every column, in one matrix product per layer; an extra row only the
    columns it is scored as a positive for (the rest stay 0 and are never read).
    """
    x = batch.activations
    out = np.zeros((len(x), len(columns), x.shape[1]))
    dense = np.flatnonzero(batch.prefix)
    if dense.size:
        rows = x[dense]
        out[dense] = np.stack(
            [rows[:, layer, :] @ units[:, layer, :].T for layer in range(x.shape[1])], axis=-1
        )
    positive = batch.scored_positive[:, list(columns)]
    for row in np.flatnonzero(~batch.prefix):
        picked = np.flatnonzero(positive[row])
        out[row, picked] = np.einsum("clh,lh->cl", units[picked], x[row])
    return out


# -- the evaluation -------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Held-out scores per concept, and projection spreads `[n_concepts, n_layers]`."""

    scores: dict[str, Scores]
    pos_std: Array
    neg_std: Array
    sampled: int


def evaluate(
    fold: Accumulators,
    store: EntryStore,
    concepts: Sequence[str],
    method: Method,
    size: int,
    units: Array | None = None,
    solver: Solver | None = None,
) -> Evaluation:
    """Score the sample held out; with `units` (`[n_concepts, n_layers, hidden]`), also
    measure the spread of each concept's positives and negatives along its published unit.

    `fold` must be the fold of exactly the entries `store` holds. A concept the fold does
    not track, or with an empty class once a bucket is left out, gets no scores from it.
    Spreads with fewer than two projections are 0.
    """
    names = list(concepts)
    n_layers = fold.shape[0]
    fitter = HeldOutFit(fold, names, method, solver)
    sample = choose_sample(store, fold, names, size)
    held: dict[int, tuple[list[Array], list[Array]]] = {c: ([], []) for c in fitter.columns}
    spread: list[tuple[list[Array], list[Array]]] = [([], []) for _ in names]
    sampled = 0
    for ids in sample.buckets.values():
        entries = list(store.sample_live_entries(ids))
        if not entries:
            continue
        sampled += len(entries)
        batch = Batch.read(entries, fold, names, sample)
        negative = batch.negative
        bucket_units, midpoints, fit = fitter.without(batch)
        scores = project(batch, bucket_units, fitter.columns) - midpoints[None, :, :]
        for t, column in enumerate(fitter.columns):
            if fit[t]:
                held[column][0].append(scores[batch.scored_positive[:, column], t])
                held[column][1].append(scores[negative[:, column], t])
        if units is not None and names:
            projections = project(batch, units, range(len(names)))
            for column in range(len(names)):
                spread[column][0].append(projections[batch.scored_positive[:, column], column])
                spread[column][1].append(projections[negative[:, column], column])
    return Evaluation(
        scores={
            names[column]: Scores(_rows(pos, n_layers), _rows(neg, n_layers))
            for column, (pos, neg) in held.items()
        },
        pos_std=np.array([_std(pos, n_layers) for pos, _ in spread]).reshape(-1, n_layers),
        neg_std=np.array([_std(neg, n_layers) for _, neg in spread]).reshape(-1, n_layers),
        sampled=sampled,
    )


def cross_validate(
    fold: Accumulators,
    store: EntryStore,
    concepts: Sequence[str],
    method: Method,
    size: int,
    solver: Solver | None = None,
) -> dict[str, Scores]:
    """Held-out scores per concept over a sample of `size` nodes (plus rare extras)."""
    return evaluate(fold, store, concepts, method, size, solver=solver).scores


def _rows(parts: list[Array], n_layers: int) -> Array:
    return np.concatenate(parts) if parts else np.zeros((0, n_layers))


def _std(parts: list[Array], n_layers: int) -> Array:
    values = _rows(parts, n_layers)
    if len(values) < 2:
        return np.zeros(n_layers)
    std: Array = values.std(axis=0, ddof=1)
    return std


# -- when to evaluate again ---------------------------------------------------------------


def evaluation_due(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    live_nodes: int,
    settings: VectorsConfig,
    now: datetime,
) -> str | None:
    """Why the sampled figures must be measured again, or None to reuse `previous`'s.

    `current` holds the new manifest's `concepts`, `stale`, `ledger_seq`,
    `settings_fingerprint` and `registry_epoch`. Spreads and AUROCs move slowly as a graph
    grows, so they are kept for up to `evaluate_every` seconds, or until the ledger has moved
    by more than `evaluate_after_changes` of the eligible nodes (in ledger steps: an edit is
    a retraction and an addition), whichever comes first. A concept that gains or loses its
    data (in or out of `stale`) is measured at once: its figures would be null or obsolete.
    """
    if previous is None:
        return "no earlier generation"
    last = previous.get("evaluation")
    if not isinstance(last, dict):
        return "the last generation carries no evaluation"
    for key in ("settings_fingerprint", "registry_epoch"):
        if previous.get(key) != current[key]:
            return f"{key} changed"
    if set(previous.get("stale", [])) != set(current["stale"]):
        return "the stale concepts changed"
    measured = set(previous.get("calibration", {})) & set(
        previous.get("quality", {}).get("auroc", {})
    )
    missing = [name for name in current["concepts"] if name not in measured]
    if missing:
        return f"{len(missing)} concept(s) not yet evaluated, such as {missing[0]!r}"
    age = (now - datetime.fromisoformat(str(last["at"]))).total_seconds()
    if age >= settings.evaluate_every:
        return f"the last evaluation is {age:.0f} s old"
    moved = int(current["ledger_seq"]) - int(last["ledger_seq"])
    if moved > settings.evaluate_after_changes * live_nodes:
        return f"{moved} ledger changes since the last evaluation, against {live_nodes} nodes"
    return None
