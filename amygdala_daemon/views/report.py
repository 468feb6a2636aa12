"""`report`: how well each published vector separates held-out nodes, cross-talk and drift.

Read-only, like `status`: the ledger is opened read-only and the writer lock is never taken,
so it works while the daemon runs. No model is needed: the ledger keeps every node's pooled
activations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.evaluation import cross_validate
from amygdala_daemon.core.labels import is_eligible, label_node
from amygdala_daemon.core.manifest import layer_key
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
from amygdala_daemon.store.generations import (
    MANIFEST_FILE,
    VECTORS_FILE,
    current_manifest,
    generation_dir,
    generations,
)
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold, stored_model_info

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


def build_report(config: Config, crosstalk_threshold: float = 0.5) -> QualityReport:
    """Held-out AUROC and Cohen's d, drift, cross-talk and co-occurrence of the current vectors."""
    published = StatePaths(config.state_path).published
    manifest = current_manifest(published)
    if manifest is None:
        raise AmygdalaError(
            f"report: no published generation under {published}; "
            "run `amygdala-daemon run --once` or `amygdala-daemon rebuild` first"
        )
    concepts: list[str] = list(manifest["concepts"])
    layers: list[int] = list(manifest["layers"])
    method = str(manifest.get("method", config.vectors.method))
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
        fold = recover_fold(ledger, config, (len(info.layers), info.hidden_size))
        scores = cross_validate(fold, ledger, concepts, method, config.vectors.evaluation_sample)
        positives: dict[str, set[str]] = {name: set() for name in concepts}
        for node_id, tags, content in ledger.live_labels():
            if is_eligible(tags, content, fold.labels):
                for name in label_node(tags, content, fold.known, fold.labels).positive:
                    if name in positives:
                        positives[name].add(node_id)
        ledger_seq = ledger.seq
        ledger.conn.execute("COMMIT")
    finally:
        ledger.close()
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    generation = int(manifest["generation"])
    current = load_vectors(published / "current", layers)
    previous_generation, drift = _drift(concepts, current, published, generation)
    matrices = {layer: cosine_matrix(current[layer]) for layer in layers if layer in current}
    both, jaccard = cooccurrence(concepts, positives)
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
        for pair in flag_pairs(concepts, matrices, crosstalk_threshold)
    ]
    rows: list[dict[str, Any]] = []
    calibration = manifest.get("calibration", {})
    for row, name in enumerate(concepts):
        found = scores.get(name)
        per_layer = {}
        for i, layer in enumerate(layers):
            per_layer[str(layer)] = {
                "auroc": finite_or_none(found.auroc(i)) if found else None,
                "cohens_d": finite_or_none(found.cohens_d(i)) if found else None,
                "drift": drift[name].get(layer),
                "calibration": calibration.get(name, {}).get(str(layer)),
            }
        aurocs = [v["auroc"] for v in per_layer.values() if v["auroc"] is not None]
        rows.append(
            {
                "name": name,
                "row": row,
                "n_pos": counts.get(name, (0, 0))[0],
                "n_neg": counts.get(name, (0, 0))[1],
                "scored_pos": int(found.positive.shape[0]) if found else 0,
                "scored_neg": int(found.negative.shape[0]) if found else 0,
                "stale": name in manifest.get("stale", []),
                "mean_auroc": finite_or_none(nan_mean(aurocs)),
                "layers": per_layer,
            }
        )
    ranked = sorted(
        (r for r in rows if r["mean_auroc"] is not None), key=lambda r: (r["mean_auroc"], r["name"])
    )

    def nested(matrix: Array) -> list[list[float | None]]:
        return [[finite_or_none(float(v)) for v in line] for line in matrix]

    data: dict[str, Any] = {
        "state_dir": str(config.state_path),
        "generation": generation,
        "previous_generation": previous_generation,
        "ledger_seq": ledger_seq,
        "manifest_ledger_seq": manifest.get("ledger_seq"),
        "model_id": manifest.get("model_id"),
        "method": method,
        "layers": layers,
        "held_out": HELD_OUT_SCHEME,
        "concepts": rows,
        "mean_auroc": finite_or_none(
            nan_mean(
                cell["auroc"]
                for r in rows
                for cell in r["layers"].values()
                if cell["auroc"] is not None
            )
        ),
        "weakest": [r["name"] for r in ranked[:WEAKEST_SHOWN]],
        "crosstalk": {
            "threshold": crosstalk_threshold,
            "concepts": concepts,
            "cosine": {str(layer): nested(matrix) for layer, matrix in matrices.items()},
            "flagged": flagged,
        },
        "cooccurrence": {
            "concepts": concepts,
            "both_positive": [[int(v) for v in line] for line in both],
            "jaccard": nested(jaccard),
        },
        "unpublished": dict(sorted(manifest.get("unpublished", {}).items())),
    }
    return QualityReport(data=data, scores=scores)


# -- the human-readable table ---------------------------------------------------------------


def _num(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_report(data: dict[str, Any]) -> str:
    """The table: one row per concept, AUROC and d per layer; flagged pairs; unpublished."""
    layers: list[int] = data["layers"]
    previous = data["previous_generation"]
    lines = [
        f"generation {data['generation']} of {data['model_id']}, method {data['method']}, "
        f"ledger seq {data['ledger_seq']}",
        "AUROC and d are held out: each node is scored by a direction fit without its bucket",
        f"  ({data['held_out']})",
        "drift: lowest cosine over layers to the same row in "
        + (f"generation {previous}" if previous is not None else "the previous generation (none)"),
        "",
    ]
    name_width = max([len("concept"), *(len(r["name"]) for r in data["concepts"])])
    head = f"{'':<{name_width}} {'':>5} {'':>5}"
    sub = f"{'concept':<{name_width}} {'n_pos':>5} {'n_neg':>5}"
    for layer in layers:
        head += f"  {'layer ' + str(layer):^12}"
        sub += f"  {'AUROC':>6} {'d':>5}"
    head += f"  {'mean':>5}  {'':>5}"
    sub += f"  {'AUROC':>5}  {'drift':>5}"
    lines += [head.rstrip(), sub]
    ordered = sorted(
        data["concepts"],
        key=lambda r: (-(r["mean_auroc"] if r["mean_auroc"] is not None else -1.0), r["name"]),
    )
    for row in ordered:
        line = f"{row['name']:<{name_width}} {row['n_pos']:>5} {row['n_neg']:>5}"
        for layer in layers:
            cell = row["layers"][str(layer)]
            line += f"  {_num(cell['auroc'], 6)} {_num(cell['cohens_d'], 5)}"
        drifts = [
            row["layers"][str(layer)]["drift"]
            for layer in layers
            if row["layers"][str(layer)]["drift"] is not None
        ]
        line += f"  {_num(row['mean_auroc'], 5)}  {_num(min(drifts) if drifts else None, 5, 3)}"
        if row["stale"]:
            line += "  (stale: no positives left; last vector kept)"
        lines.append(line)
    lines.append(f"mean held-out AUROC over concepts and layers: {_num(data['mean_auroc'], 0, 3)}")
    crosstalk = data["crosstalk"]
    lines += ["", f"cross-talk: pairs whose vectors have cosine > {crosstalk['threshold']:.2f}"]
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for flag in crosstalk["flagged"]:
        by_pair.setdefault((flag["first"], flag["second"]), []).append(flag)
    if not by_pair:
        lines.append("  none")
    else:
        pair_width = max(len(f"{a} / {b}") for a, b in by_pair)
        lines.append(
            f"  {'pair':<{pair_width}}  {'max cos':>7}  {'both +':>6}  {'Jaccard':>7}  layers"
        )
        for (first, second), flags in by_pair.items():
            top = max(flags, key=lambda f: f["cosine"])
            where = ", ".join(str(f["layer"]) for f in sorted(flags, key=lambda f: f["layer"]))
            lines.append(
                f"  {first + ' / ' + second:<{pair_width}}  {top['cosine']:>7.2f}  "
                f"{top['both_positive']:>6}  {top['jaccard']:>7.2f}  {where}"
            )
        lines.append(
            "  (both +: nodes positive for both. A high Jaccard means the tags co-occur, so the\n"
            "  shared direction may come from the data rather than the method.)"
        )
    lines += ["", "tags seen but not published:"]
    unpublished = data["unpublished"]
    if not unpublished:
        lines.append("  none")
    width = max((len(name) for name in unpublished), default=0)
    lines += [f"  {name:<{width}}  {why}" for name, why in unpublished.items()]
    return "\n".join(lines)
