"""Building a release from the fold: directions, counts, calibration, and the sampled evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.concepts import select_concepts
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.evaluation import evaluate, evaluation_due
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.manifest import LAYER_CONVENTION, ModelInfo, Release, settings_fingerprint
from amygdala_daemon.core.quality import HELD_OUT_SCHEME, quality_summary
from amygdala_daemon.core.vectors import calibrate, direction
from amygdala_daemon.store.generations import _previous_vectors
from amygdala_daemon.store.ledger import Ledger


def build_release(
    fold: Accumulators,
    ledger: Ledger,
    config: Config,
    model: ModelInfo,
    published: Path,
    generation: int,
    previous: dict[str, Any] | None = None,
    force_evaluation: bool = False,
) -> Release:
    """Directions, counts and calibration for every published concept.

    Directions and calibration means are exact, from the fold. The sampled figures
    (projection spreads, held-out quality) are measured again when `evaluation_due` says so
    or when forced; otherwise they are carried over from `previous`, the newest manifest.
    """
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    selection = select_concepts(counts, ledger.registry(), config.concepts)
    ledger.register(selection.rows)
    units: dict[str, npt.NDArray[np.float64]] = {}
    stale: list[str] = []
    previous_vectors: dict[str, npt.NDArray[np.float64]] | None = None
    negatives = {name: fold.negatives(name) for name in selection.rows if name in fold.positive}
    for name in selection.rows:
        n_pos, n_neg = counts.get(name, (0, 0))
        if n_pos > 0 and n_neg > 0:
            units[name] = direction(fold.positive[name], negatives[name], config.vectors.method)
            continue
        # A published concept keeps its row; with no data left, it keeps its last vector.
        if previous_vectors is None:
            previous_vectors = _previous_vectors(published)
        units[name] = previous_vectors.get(name, np.zeros(fold.shape))
        stale.append(name)
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": "amygdala-readout/1",
        "concepts": selection.rows,
        "layers": model.layers,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "hidden_size": model.hidden_size,
        "dtype": config.vectors.dtype,
        "layer_convention": LAYER_CONVENTION,
        "method": config.vectors.method,
        "pooling": model.pooling,
        "generation": generation,
        "ledger_seq": fold.ledger_seq,
        "created_at": now.isoformat(timespec="seconds"),
        "counts": {
            name: {"n_pos": counts.get(name, (0, 0))[0], "n_neg": counts.get(name, (0, 0))[1]}
            for name in selection.rows
        },
        "stale": stale,
        "unpublished": selection.unpublished,
        "settings_fingerprint": settings_fingerprint(config, model),
        "registry_epoch": ledger.get_meta("registry_epoch") or "0",
    }
    reason = (
        "forced"
        if force_evaluation
        else evaluation_due(previous, manifest, fold.total.count, config.vectors, now)
    )
    if reason is not None or previous is None:  # (evaluation_due is never None without one)
        sampled = _measure(fold, ledger, config, model, selection.rows, units)
        sampled["evaluation"] = {
            "ledger_seq": fold.ledger_seq,
            "at": manifest["created_at"],
            "reason": reason,
            "sampled_nodes": sampled.pop("sampled_nodes"),
        }
    else:
        sampled = _carried_over(previous, selection.rows, model.layers)
    calibration: dict[str, dict[str, dict[str, float]]] = {}
    zeros = np.zeros(fold.shape)
    for row, name in enumerate(selection.rows):
        has_data = name in fold.positive and name not in stale
        pos_means = fold.positive[name].mean if has_data else zeros
        neg_means = negatives[name].mean if has_data else zeros
        calibration[name] = {
            str(layer): calibrate(
                units[name][i],
                pos_means[i],
                neg_means[i],
                sampled["pos_std"][row][i],
                sampled["neg_std"][row][i],
            ).as_dict()
            for i, layer in enumerate(model.layers)
        }
    manifest["calibration"] = calibration
    # Held-out AUROC per concept and layer, so a consumer can hide weak concepts.
    manifest["quality"] = sampled["quality"]
    manifest["evaluation"] = sampled["evaluation"]
    vectors = {
        layer: np.stack([units[name][i] for name in selection.rows])
        if selection.rows
        else np.zeros((0, model.hidden_size))
        for i, layer in enumerate(model.layers)
    }
    return Release(vectors=vectors, manifest=manifest)


def _measure(
    fold: Accumulators,
    ledger: Ledger,
    config: Config,
    model: ModelInfo,
    rows: list[str],
    units: dict[str, npt.NDArray[np.float64]],
) -> dict[str, Any]:
    """Spreads along the new units and held-out quality, from one sample of the ledger."""
    stacked = np.stack([units[name] for name in rows]) if rows else None
    measured = evaluate(
        fold, ledger, rows, config.vectors.method, config.vectors.evaluation_sample, stacked
    )
    return {
        "pos_std": measured.pos_std.tolist(),
        "neg_std": measured.neg_std.tolist(),
        "quality": quality_summary(measured.scores, rows, model.layers),
        "sampled_nodes": measured.sampled,
    }


def _carried_over(previous: dict[str, Any], rows: list[str], layers: list[int]) -> dict[str, Any]:
    """The sampled figures of the newest generation, for the same concepts and layers."""
    calibration, quality = previous["calibration"], previous["quality"]

    def spread(key: str) -> list[list[float]]:
        return [[calibration[name][str(layer)][key] for layer in layers] for name in rows]

    return {
        "pos_std": spread("pos_std"),
        "neg_std": spread("neg_std"),
        "quality": {
            "held_out": HELD_OUT_SCHEME,
            "auroc": {name: quality["auroc"][name] for name in rows},
            "cohens_d": {name: quality["cohens_d"][name] for name in rows},
        },
        "evaluation": previous["evaluation"],
    }


# -- writing ----------------------------------------------------------------------------
