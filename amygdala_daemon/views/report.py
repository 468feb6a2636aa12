"""`report`: how well each published vector separates held-out nodes, cross-talk and drift.

Read-only, like `status`: the ledger is opened read-only and the writer lock is never taken,
so it works while the daemon runs. No model is needed: the ledger keeps every node's pooled
activations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.core.config import Config, Method
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.evaluation import cross_validate
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.labels import is_eligible, label_node
from amygdala_daemon.core.manifest import MANIFEST_FILE, VECTORS_FILE, Manifest, layer_key
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.quality import (
    HELD_OUT_SCHEME,
    Array,
    Scores,
    cooccurrence,
    cosine_matrix,
    finite_or_none,
    flag_pairs,
    nan_mean,
)
from amygdala_daemon.core.vectors import as_method, directions
from amygdala_daemon.store.generations import current_manifest, generation_dir, generations
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold, stored_model_info
from amygdala_daemon.store.samples import covariance_solver

# Histograms are drawn for this many of the weakest concepts.
WEAKEST_SHOWN = 4


@dataclass
class QualityReport:
    """`data` is the `report --json` object; `scores` feed the projection histograms."""

    data: dict[str, Any]
    scores: dict[str, Scores]


def load_vectors(directory: Path, layers: list[int]) -> dict[int, Array]:
    """`[n_concepts, hidden]` per layer from a generation directory, as float64."""
    from safetensors import safe_open

    out: dict[int, Array] = {}
    # torch, not numpy: numpy cannot hold a bfloat16 tensor.
    with safe_open(str(directory / VECTORS_FILE), framework="pt") as handle:
        keys = set(handle.keys())
        for layer in layers:
            if layer_key(layer) in keys:
                out[layer] = handle.get_tensor(layer_key(layer)).double().numpy()
    return out


def _previous(published: Path, generation: int) -> tuple[int, dict[str, Any]] | None:
    """The newest kept generation older than `generation`, with its manifest."""
    for older in reversed([g for g in generations(published) if g < generation]):
        try:
            text = (generation_dir(published, older) / MANIFEST_FILE).read_text()
        except OSError:
            continue
        manifest: dict[str, Any] = json.loads(text)
        return older, manifest
    return None


def _drift(
    concepts: list[str],
    current: dict[int, Array],
    published: Path,
    generation: int,
) -> tuple[int | None, dict[str, dict[int, float | None]]]:
    """Cosine of each concept's row to its row in the previous generation, per layer."""
    empty: dict[str, dict[int, float | None]] = {name: {} for name in concepts}
    found = _previous(published, generation)
    if found is None:
        return None, empty
    older, manifest = found
    try:
        previous = load_vectors(generation_dir(published, older), list(manifest["layers"]))
    except (OSError, ValueError):
        return older, empty
    rows = {name: i for i, name in enumerate(manifest["concepts"])}
    drift = empty
    for i, name in enumerate(concepts):
        for layer, matrix in current.items():
            if name not in rows or layer not in previous:
                drift[name][layer] = None
                continue
            pair = np.stack([matrix[i], previous[layer][rows[name]]])
            drift[name][layer] = finite_or_none(float(cosine_matrix(pair)[0, 1]))
    return older, drift


@dataclass
class _LedgerReading:
    """What the report takes from one read transaction of the ledger."""

    scores: dict[str, Scores]
    positives: dict[str, set[str]]
    counts: dict[str, tuple[int, int]]
    ledger_seq: int
    refit: dict[int, Array] | None
    """Directions fit from the fold with another method than the published one, per layer."""


def _published_manifest(published: Path) -> Manifest:
    manifest = current_manifest(published)
    if manifest is None:
        raise AmygdalaError(
            f"report: no published generation under {published}; "
            "run `amygdala-daemon run --once` or `amygdala-daemon rebuild` first"
        )
    return manifest


def _positive_sets(ledger: Ledger, fold: Accumulators, concepts: list[str]) -> dict[str, set[str]]:
    """The ids of each concept's positives, labelled as the fold labels them."""
    positives: dict[str, set[str]] = {name: set() for name in concepts}
    for node_id, tags, content in ledger.live_labels():
        if is_eligible(tags, content, fold.labels):
            for name in label_node(tags, content, fold.known, fold.labels).positive:
                if name in positives:
                    positives[name].add(node_id)
    return positives


def _refit(
    fold: Accumulators, ledger: Ledger, config: Config, concepts: list[str], method: Method
) -> dict[int, Array]:
    """`[n_concepts, hidden]` per layer index: the concepts' directions under `method`."""
    solver = covariance_solver(fold, ledger, _with_method(config, method))
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    fitted = [name for name in concepts if min(counts.get(name, (0, 0))) > 0]
    units = directions(fold, fitted, method, solver)
    zeros = np.zeros(fold.shape)
    stacked = np.stack([units.get(name, zeros) for name in concepts])
    return {i: stacked[:, i, :] for i in range(fold.shape[0])}


def _with_method(config: Config, method: Method) -> Config:
    return replace(config, vectors=replace(config.vectors, method=method))


def _read_ledger(
    config: Config, concepts: list[str], layers: list[int], method: Method, refit: bool
) -> _LedgerReading:
    ledger_path = StatePaths(config.state_path).ledger
    ledger = Ledger(ledger_path, readonly=True)
    try:
        # One read transaction: the fold, the scores and the counts see one ledger state.
        ledger.conn.execute("BEGIN")
        info = stored_model_info(ledger)
        if info is None:
            raise AmygdalaError(f"report: the ledger at {ledger_path} holds no activations")
        if info.layers != layers:
            raise AmygdalaError(
                f"report: the ledger holds layers {info.layers} but the current generation "
                f"has {layers}; publish again (`amygdala-daemon publish --force`)"
            )
        shape = (len(info.layers), info.hidden_size)
        settings = _with_method(config, method)
        fold = recover_fold(ledger, settings, shape)
        solver = covariance_solver(fold, ledger, settings)
        sample = config.vectors.evaluation_sample
        reading = _LedgerReading(
            scores=cross_validate(fold, ledger, concepts, method, sample, solver),
            positives=_positive_sets(ledger, fold, concepts),
            counts={c.name: (c.n_pos, c.n_neg) for c in fold.counts()},
            ledger_seq=ledger.seq,
            refit=_refit(fold, ledger, config, concepts, method) if refit else None,
        )
        ledger.conn.execute("COMMIT")
    finally:
        ledger.close()
    return reading


def _layer_cells(
    name: str,
    layers: list[int],
    found: Scores | None,
    drift: dict[int, float | None],
    calibration: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """One concept's held-out AUROC and d, drift and calibration, per layer."""
    return {
        str(layer): {
            "auroc": finite_or_none(found.auroc(i)) if found else None,
            "cohens_d": finite_or_none(found.cohens_d(i)) if found else None,
            "drift": drift.get(layer),
            "calibration": calibration.get(name, {}).get(str(layer)),
        }
        for i, layer in enumerate(layers)
    }


def _concept_rows(
    manifest: Manifest,
    reading: _LedgerReading,
    drift: dict[str, dict[int, float | None]],
) -> list[dict[str, Any]]:
    """One row per published concept, in the vectors' row order."""
    layers: list[int] = list(manifest["layers"])
    calibration = manifest.get("calibration", {})
    rows: list[dict[str, Any]] = []
    for row, name in enumerate(manifest["concepts"]):
        found = reading.scores.get(name)
        per_layer = _layer_cells(name, layers, found, drift[name], calibration)
        aurocs = [v["auroc"] for v in per_layer.values() if v["auroc"] is not None]
        n_pos, n_neg = reading.counts.get(name, (0, 0))
        rows.append(
            {
                "name": name,
                "row": row,
                "n_pos": n_pos,
                "n_neg": n_neg,
                "scored_pos": int(found.positive.shape[0]) if found else 0,
                "scored_neg": int(found.negative.shape[0]) if found else 0,
                "stale": name in manifest.get("stale", []),
                "mean_auroc": finite_or_none(nan_mean(aurocs)),
                "layers": per_layer,
            }
        )
    return rows


def _mean_auroc(rows: list[dict[str, Any]]) -> float | None:
    """Over every concept and layer that has one."""
    return finite_or_none(
        nan_mean(
            cell["auroc"]
            for r in rows
            for cell in r["layers"].values()
            if cell["auroc"] is not None
        )
    )


def _weakest(rows: list[dict[str, Any]]) -> list[str]:
    ranked = sorted(
        (r for r in rows if r["mean_auroc"] is not None), key=lambda r: (r["mean_auroc"], r["name"])
    )
    return [r["name"] for r in ranked[:WEAKEST_SHOWN]]


def _nested(matrix: Array) -> list[list[float | None]]:
    return [[finite_or_none(float(v)) for v in line] for line in matrix]


def _crosstalk(
    concepts: list[str],
    matrices: dict[int, Array],
    threshold: float,
    both: Array,
    jaccard: Array,
) -> dict[str, Any]:
    """The cosine matrices, and the pairs above `threshold` beside how often their tags meet."""
    index = {name: i for i, name in enumerate(concepts)}
    flagged = [
        {
            "first": pair.first,
            "second": pair.second,
            "layer": pair.layer,
            "cosine": pair.cosine,
            "both_positive": int(both[index[pair.first], index[pair.second]]),
            "jaccard": float(jaccard[index[pair.first], index[pair.second]]),
        }
        for pair in flag_pairs(concepts, matrices, threshold)
    ]
    return {
        "threshold": threshold,
        "concepts": concepts,
        "cosine": {str(layer): _nested(matrix) for layer, matrix in matrices.items()},
        "flagged": flagged,
    }


def build_report(
    config: Config, crosstalk_threshold: float = 0.5, method: Method | None = None
) -> QualityReport:
    """Held-out AUROC and Cohen's d, drift, cross-talk and co-occurrence of the current vectors.

    With `method`, the published concepts are scored and compared as that method would fit
    them from the same ledger, without publishing anything.
    """
    published = StatePaths(config.state_path).published
    manifest = _published_manifest(published)
    concepts: list[str] = list(manifest["concepts"])
    layers: list[int] = list(manifest["layers"])
    published_method = as_method(manifest.get("method", config.vectors.method))
    refit = method is not None and method != published_method
    method = method or published_method
    reading = _read_ledger(config, concepts, layers, method, refit)
    generation = int(manifest["generation"])
    current = load_vectors(published / "current", layers)
    previous_generation, drift = _drift(concepts, current, published, generation)
    if reading.refit is not None:
        current = {layer: reading.refit[i] for i, layer in enumerate(layers)}
    matrices = {layer: cosine_matrix(current[layer]) for layer in layers if layer in current}
    both, jaccard = cooccurrence(concepts, reading.positives)
    rows = _concept_rows(manifest, reading, drift)
    data: dict[str, Any] = {
        "state_dir": str(config.state_path),
        "generation": generation,
        "previous_generation": previous_generation,
        "ledger_seq": reading.ledger_seq,
        "manifest_ledger_seq": manifest.get("ledger_seq"),
        "model_id": manifest.get("model_id"),
        "method": method,
        "layers": layers,
        "held_out": HELD_OUT_SCHEME,
        "concepts": rows,
        "mean_auroc": _mean_auroc(rows),
        "weakest": _weakest(rows),
        "crosstalk": _crosstalk(concepts, matrices, crosstalk_threshold, both, jaccard),
        "cooccurrence": {
            "concepts": concepts,
            "both_positive": [[int(v) for v in line] for line in both],
            "jaccard": _nested(jaccard),
        },
        "unpublished": dict(sorted(manifest.get("unpublished", {}).items())),
    }
    return QualityReport(data=data, scores=reading.scores)
