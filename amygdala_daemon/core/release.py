"""Building a release: a pure function of the fold, the registry, the last manifest and a clock.

A release is made in two pure steps with one measurement between them:

1. `draft_release`: concept selection (rows keep their registry index), the directions, and
   the manifest's exact parts. A published concept with no data left keeps its last vector,
   which the caller reads from the current generation and passes in.
2. The sampled figures, measured on stored activations (`evaluation.evaluate`) when
   `evaluation_due` says so, or carried over from the last manifest (`carried_over`).
3. `finish_release`: calibration (exact means, sampled spreads) and the vectors per layer.

Nothing here reads a file, the ledger or the clock; the caller does, and hands the values in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.concepts import Selection
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.covariance import Solver
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import (
    Counts,
    EvaluationStamp,
    Manifest,
    ModelInfo,
    PerLayer,
    Quality,
    Release,
    build_manifest,
)
from amygdala_daemon.core.quality import HELD_OUT_SCHEME
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.core.vectors import calibrate, directions

Array = npt.NDArray[np.float64]


def settings_fingerprint(config: Config, model: ModelInfo) -> str:
    """Everything besides the ledger that shapes the vectors; unchanged means skip."""
    payload = {
        "labels": asdict(config.labels),
        "concepts": asdict(config.concepts),
        "vectors": asdict(config.vectors),
        "model": asdict(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def stale_concepts(fold: Accumulators, rows: list[str]) -> list[str]:
    """Published rows with no positives or no negatives left: they keep their last vector."""
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    return [name for name in rows if min(counts.get(name, (0, 0))) == 0]


@dataclass(frozen=True)
class Draft:
    """A release before its sampled figures: rows, unit directions, the exact manifest keys."""

    manifest: Manifest
    units: dict[str, Array]
    """Per concept `[n_layers, hidden]`, unit norm per layer (or zeros: no vector known)."""
    negatives: dict[str, Welford]

    @property
    def rows(self) -> list[str]:
        return self.manifest["concepts"]

    def stacked_units(self) -> Array | None:
        """`[n_concepts, n_layers, hidden]` in row order, for measuring spreads."""
        return np.stack([self.units[name] for name in self.rows]) if self.rows else None


def draft_release(
    fold: Accumulators,
    selection: Selection,
    config: Config,
    model: ModelInfo,
    *,
    generation: int,
    created_at: str,
    registry_epoch: str,
    previous_vectors: dict[str, Array],
    solver: Solver | None = None,
) -> Draft:
    """Directions and the exact parts of the manifest for `selection.rows`.

    `previous_vectors` holds the last published vector of every stale row that had one;
    `solver` applies the shrunk inverse covariance, for the covariance-aware methods.
    """
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    stale = stale_concepts(fold, selection.rows)
    negatives = {name: fold.negatives(name) for name in selection.rows if name not in stale}
    fitted = directions(fold, list(negatives), config.vectors.method, solver, negatives)
    units: dict[str, Array] = {}
    for name in selection.rows:
        if name in stale:
            units[name] = previous_vectors.get(name, np.zeros(fold.shape))
        else:
            units[name] = fitted[name]
    manifest = build_manifest(
        model,
        selection.rows,
        dtype=config.vectors.dtype,
        method=config.vectors.method,
        generation=generation,
        created_at=created_at,
        counts={
            name: Counts(n_pos=counts.get(name, (0, 0))[0], n_neg=counts.get(name, (0, 0))[1])
            for name in selection.rows
        },
        unpublished=selection.unpublished,
        calibration={},
    )
    manifest["ledger_seq"] = fold.ledger_seq
    manifest["stale"] = stale
    manifest["settings_fingerprint"] = settings_fingerprint(config, model)
    manifest["registry_epoch"] = registry_epoch
    return Draft(manifest, units, negatives)


@dataclass(frozen=True)
class Sampled:
    """The figures measured on a sample of stored activations, in row order."""

    pos_std: list[list[float]]
    """`[n_concepts][n_layers]` spread of positives' projections on the published unit."""
    neg_std: list[list[float]]
    quality: Quality
    evaluation: EvaluationStamp


def carried_over(previous: Manifest, rows: list[str], layers: list[int]) -> Sampled:
    """The sampled figures of the newest generation, for the same concepts and layers."""
    calibration, quality = previous["calibration"], previous["quality"]

    def spread(key: str) -> list[list[float]]:
        return [[calibration[name][str(layer)][key] for layer in layers] for name in rows]

    return Sampled(
        pos_std=spread("pos_std"),
        neg_std=spread("neg_std"),
        quality={
            "held_out": HELD_OUT_SCHEME,
            "auroc": {name: quality["auroc"][name] for name in rows},
            "cohens_d": {name: quality["cohens_d"][name] for name in rows},
        },
        evaluation=previous["evaluation"],
    )


def finish_release(draft: Draft, fold: Accumulators, sampled: Sampled) -> Release:
    """Calibration from exact means and sampled spreads; the vectors, one array per layer."""
    manifest = draft.manifest
    layers = manifest["layers"]
    zeros = np.zeros(fold.shape)
    calibration: dict[str, PerLayer] = {}
    for row, name in enumerate(draft.rows):
        has_data = name in draft.negatives
        pos_means = fold.positive[name].mean if has_data else zeros
        neg_means = draft.negatives[name].mean if has_data else zeros
        calibration[name] = {
            str(layer): calibrate(
                draft.units[name][i],
                pos_means[i],
                neg_means[i],
                sampled.pos_std[row][i],
                sampled.neg_std[row][i],
            ).as_dict()
            for i, layer in enumerate(layers)
        }
    manifest["calibration"] = calibration
    # Held-out AUROC per concept and layer, so a consumer can hide weak concepts.
    manifest["quality"] = sampled.quality
    manifest["evaluation"] = sampled.evaluation
    vectors = {
        layer: np.stack([draft.units[name][i] for name in draft.rows])
        if draft.rows
        else np.zeros((0, manifest["hidden_size"]))
        for i, layer in enumerate(layers)
    }
    return Release(vectors=vectors, manifest=manifest)
