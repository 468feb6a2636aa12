"""`score_ridge`: untagged eligible nodes at score 0, against leaving them out of the fit.

Fits both variants per concept and layer with the same shrunk covariance (S + mean eigenvalue
* I over all eligible nodes), from a state directory's ledger, and scores them:

- on the graph: held-out AUROC, positives against negatives, 5 buckets by sha256(node id);
- on rated text: Pearson r (AUROC for true/false labels) at each concept's best layer.

    .venv/bin/python benchmarks/score_regression_variants.py STATE_DIR examples/rated_texts.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from benchlib import set_threads

Array = npt.NDArray[np.float64]
VARIANTS = ("untagged at 0", "untagged left out")


def fit(x: Array, scores: Array, tagged: npt.NDArray[np.bool_], variant: str) -> Array:
    """The unit ridge direction of one layer `[hidden]`, for one concept's scores."""
    covariance = np.cov(x, rowvar=False)
    mu = np.trace(covariance) / covariance.shape[0]
    rows = slice(None) if variant == VARIANTS[0] else tagged
    y, z = scores[rows], x[rows]
    cross = ((y - y.mean())[:, None] * (z - z.mean(axis=0))).sum(axis=0) / max(len(y) - 1, 1)
    w: Array = np.linalg.solve(covariance + mu * np.eye(len(covariance)), cross)
    return w / np.linalg.norm(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("rated", type=Path)
    args = parser.parse_args()
    set_threads(1)

    from amygdala_daemon.core.config import from_dict
    from amygdala_daemon.core.correlation import pearson
    from amygdala_daemon.core.labels import KnownConcepts, is_eligible, label_node
    from amygdala_daemon.core.quality import auroc
    from amygdala_daemon.core.sampling import held_out_bucket
    from amygdala_daemon.model.extractor import Extractor
    from amygdala_daemon.model.loading import load_model
    from amygdala_daemon.store.generations import current_manifest
    from amygdala_daemon.store.ledger import Ledger

    config = from_dict({"state_dir": str(args.state_dir)})
    manifest = current_manifest(args.state_dir / "published")
    assert manifest is not None, "publish first"
    ledger = Ledger(args.state_dir / "ledger.sqlite3", readonly=True)
    entries = [e for e in ledger.live_entries() if is_eligible(e.tags, e.content, config.labels)]
    x = np.stack([e.activations.astype(np.float64) for e in entries])
    buckets = np.array([held_out_bucket(e.node_id) for e in entries])
    known = KnownConcepts(manifest["concepts"])
    directions: dict[str, dict[str, Array]] = {v: {} for v in VARIANTS}
    graph: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for name in manifest["concepts"]:
        scores = np.array([e.tags.get(name, 0.0) for e in entries])
        tagged = np.array([name in e.tags for e in entries])
        labels = [label_node(e.tags, e.content, known, config.labels) for e in entries]
        positive = np.array([name in lab.positive for lab in labels])
        negative = ~np.array([name in lab.excluded_from_negatives for lab in labels]) & ~positive
        for variant in VARIANTS:
            per_layer = []
            for layer in range(x.shape[1]):
                held = []
                for bucket in range(5):
                    train, test = buckets != bucket, buckets == bucket
                    w = fit(x[train, layer], scores[train], tagged[train], variant)
                    projected = x[test, layer] @ w
                    if positive[test].any() and negative[test].any():
                        held.append(auroc(projected[positive[test]], projected[negative[test]]))
                per_layer.append(float(np.mean(held)))
            graph[variant].append(float(np.mean(per_layer)))
            directions[variant][name] = np.stack(
                [fit(x[:, layer], scores, tagged, variant) for layer in range(x.shape[1])]
            )

    loaded = load_model(config.model, args.state_dir)
    extractor = Extractor.from_config(config.model, loaded, layers=manifest["layers"])
    rows: list[dict[str, Any]] = [
        json.loads(line) for line in args.rated.read_text().splitlines() if line.strip()
    ]
    extracted = extractor.extract([row["text"] for row in rows])
    acts = np.stack([e.activations for e in extracted if e.activations is not None])
    rated = sorted({k for row in rows for k in row if k not in ("id", "text")} & set(known.names))
    for variant in VARIANTS:
        best = []
        for name in rated:
            pairs = [(i, row[name]) for i, row in enumerate(rows) if row.get(name) is not None]
            index = [i for i, _ in pairs]
            y = np.array([float(value) for _, value in pairs])
            label = set(np.unique(y)) <= {0.0, 1.0}
            figures = []
            for layer in range(acts.shape[1]):
                projected = acts[index, layer].astype(np.float64) @ directions[variant][name][layer]
                figures.append(
                    auroc(projected[y == 1], projected[y == 0]) if label else pearson(projected, y)
                )
            best.append(max(figures))
        listed = ", ".join(f"{n} {b:.2f}" for n, b in zip(rated, best, strict=True))
        print(
            f"{variant:18s} graph held-out AUROC {np.mean(graph[variant]):.3f}   "
            f"rated text {np.mean(best):.3f} ({listed})"
        )


if __name__ == "__main__":
    main()
