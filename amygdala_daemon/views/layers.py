"""`layers`: sweep every decoder block on a sample of the graph and recommend target layers.

Unlike `report`, this needs the model: the ledger only holds the configured layers. It reads
the source and the model, and writes nothing to the state directory (the converted SmolLM2
cache aside, which `probe` creates too).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from amygdala_daemon.core.changes import Entry
from amygdala_daemon.core.concepts import select_concepts
from amygdala_daemon.core.config import ConceptsConfig, Config, LabelsConfig, Method, Shrinkage
from amygdala_daemon.core.covariance import ExactCovariance
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.evaluation import cross_validate
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.labels import is_eligible
from amygdala_daemon.core.quality import (
    HELD_OUT_SCHEME,
    finite_or_none,
    nan_mean,
    recommend_layers,
    rule_of_thumb_layers,
)
from amygdala_daemon.core.sampling import sample_key
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.core.vectors import needs_covariance
from amygdala_daemon.sources import open_source

DEFAULT_SAMPLE = 300


@dataclass(frozen=True)
class SampledNode:
    node_id: str
    tags: dict[str, float]
    content: str


class MemoryEntries:
    """Entries held in memory, served the way the ledger serves them."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = {entry.node_id: entry for entry in entries}

    def live_labels(self) -> Iterator[tuple[str, dict[str, float], str]]:
        for entry in self.entries.values():
            yield entry.node_id, entry.tags, entry.content

    def sample_live_entries(self, node_ids: list[str]) -> Iterator[Entry]:
        for node_id in node_ids:
            if node_id in self.entries:
                yield self.entries[node_id]


def sample_eligible(config: Config, size: int) -> tuple[list[SampledNode], int]:
    """Up to `size` eligible nodes (0: all), the lowest sha256 of their id first."""
    snapshot = open_source(config.source).snapshot()
    eligible = []
    for node in snapshot.nodes.values():
        if not isinstance(node.text, str):
            continue
        parsed = parse_text(node.text, config.concepts.aliases)
        if is_eligible(parsed.tags, parsed.content, config.labels):
            eligible.append(SampledNode(node.id, parsed.tags, parsed.content))
    eligible.sort(key=lambda n: sample_key(n.node_id))
    chosen = eligible if size <= 0 else eligible[:size]
    return chosen, len(eligible)


def capture_all_layers(config: Config, nodes: Sequence[SampledNode]) -> tuple[list[Entry], str]:
    """Pooled activations at every decoder block, `[n_layers, hidden]` per node."""
    from tqdm import tqdm

    from amygdala_daemon.model.extractor import Extractor, find_decoder_blocks
    from amygdala_daemon.model.loading import load_model

    loaded = load_model(config.model, config.state_path)
    n_layers = len(find_decoder_blocks(loaded.model))
    extractor = Extractor.from_config(config.model, loaded, layers=list(range(n_layers)))
    # disable=None: a bar on a terminal, silence in logs and CI.
    bar = tqdm(total=len(nodes), desc="layers", unit="node", file=sys.stderr, disable=None)
    try:
        results = extractor.extract([n.content for n in nodes], progress=bar.update)
    finally:
        bar.close()
    entries = [
        Entry(i, node.node_id, node.tags, node.content, result.activations)
        for i, (node, result) in enumerate(zip(nodes, results, strict=True))
        if result.activations is not None
    ]
    return entries, loaded.model_id


def score_layers(
    entries: Sequence[Entry],
    layers: Sequence[int],
    labels: LabelsConfig,
    concepts_config: ConceptsConfig,
    method: Method,
    shrinkage: Shrinkage = "mean_eigenvalue",
) -> dict[str, Any]:
    """Held-out AUROC per concept and layer over `entries`, and the recommended layers.

    `layers[i]` names row i of every entry's activations.
    """
    if not entries:
        raise AmygdalaError("layers: no eligible node to sweep")
    shape = (len(layers), int(entries[0].activations.shape[1]))
    names = {name for e in entries if is_eligible(e.tags, e.content, labels) for name in e.tags}
    covariance = needs_covariance(method)
    fold = Accumulators.from_entries(entries, names, shape, labels, 0, covariance=covariance)
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    selection = select_concepts(counts, [], concepts_config)
    concepts = sorted(selection.rows)
    solver = ExactCovariance(fold.comoment, shrinkage) if fold.comoment is not None else None
    store = MemoryEntries(entries)
    scores = cross_validate(fold, store, concepts, method, len(entries), solver)
    table = {
        name: [scores[name].auroc(i) if name in scores else math.nan for i in range(len(layers))]
        for name in concepts
    }
    mean_by_layer = {
        layer: nan_mean(table[name][i] for name in concepts) for i, layer in enumerate(layers)
    }
    recommended = recommend_layers(mean_by_layer)
    return {
        "layers": list(layers),
        "held_out": HELD_OUT_SCHEME,
        "method": method,
        "concepts": [
            {
                "name": name,
                "n_pos": counts[name][0],
                "n_neg": counts[name][1],
                "auroc": {
                    str(layer): finite_or_none(table[name][i]) for i, layer in enumerate(layers)
                },
            }
            for name in concepts
        ],
        "unpublished": dict(sorted(selection.unpublished.items())),
        "mean_auroc": {str(layer): finite_or_none(v) for layer, v in mean_by_layer.items()},
        "recommended": recommended,
        "recommended_mean_auroc": finite_or_none(_mean_at(mean_by_layer, recommended)),
    }


def _mean_at(mean_by_layer: dict[int, float], chosen: Sequence[int]) -> float:
    return nan_mean(mean_by_layer[layer] for layer in chosen if layer in mean_by_layer)


def layer_sweep(config: Config, sample: int = DEFAULT_SAMPLE) -> dict[str, Any]:
    """The `layers --json` object."""
    from amygdala_daemon.model.extractor import default_layers, resolve_layers

    nodes, n_eligible = sample_eligible(config, sample)
    if not nodes:
        raise AmygdalaError("layers: the source has no eligible node (tagged, with content)")
    entries, model_id = capture_all_layers(config, nodes)
    n_layers = int(entries[0].activations.shape[0]) if entries else 0
    result = score_layers(
        entries,
        list(range(n_layers)),
        config.labels,
        config.concepts,
        config.vectors.method,
        config.vectors.shrinkage,
    )
    mean_by_layer = {
        int(k): (math.nan if v is None else v) for k, v in result["mean_auroc"].items()
    }
    rule = rule_of_thumb_layers(n_layers)
    configured = (
        resolve_layers(config.model.layers, n_layers)
        if config.model.layers
        else default_layers(n_layers)
    )
    result.update(
        {
            "model_id": model_id,
            "n_layers": n_layers,
            "sample": len(entries),
            "eligible": n_eligible,
            "rule_of_thumb": rule,
            "rule_of_thumb_mean_auroc": finite_or_none(_mean_at(mean_by_layer, rule)),
            "configured": configured,
            "configured_mean_auroc": finite_or_none(_mean_at(mean_by_layer, configured)),
        }
    )
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_layers(data: dict[str, Any]) -> str:
    """One line per layer: mean and lowest held-out AUROC over concepts, with the picks marked."""
    rule = set(data["rule_of_thumb"])
    lines = [
        f"layer sweep of {data['model_id']}: {data['sample']} of {data['eligible']} eligible "
        f"nodes (lowest sha256 of id first), {len(data['concepts'])} concepts, "
        f"method {data['method']}",
        f"held-out AUROC ({data['held_out']}), mean and lowest over concepts",
        "",
        f"{'layer':>5}  {'mean':>5}  {'lowest':>6}",
    ]
    for layer in data["layers"]:
        values = [
            c["auroc"][str(layer)] for c in data["concepts"] if c["auroc"][str(layer)] is not None
        ]
        lowest = min(values) if values else None
        marks = []
        if layer in data["recommended"]:
            marks.append(f"recommended #{data['recommended'].index(layer) + 1}")
        if layer in rule:
            marks.append("60-80% of depth")
        if layer in data["configured"]:
            marks.append("configured")
        lines.append(
            f"{layer:>5}  {_fmt(data['mean_auroc'][str(layer)]):>5}  {_fmt(lowest):>6}"
            + (f"  {', '.join(marks)}" if marks else "")
        )
    rule_span = f"{min(rule)}-{max(rule)}" if rule else "none"
    lines += [
        "",
        f"recommended layers:        {sorted(data['recommended'])}  "
        f"mean held-out AUROC {_fmt(data['recommended_mean_auroc'])}",
        f"rule of thumb (60-80%):    {rule_span}  "
        f"mean held-out AUROC {_fmt(data['rule_of_thumb_mean_auroc'])}",
        f"configured (model.layers): {data['configured']}  "
        f"mean held-out AUROC {_fmt(data['configured_mean_auroc'])}",
        "",
        f"to use them: [model] layers = {sorted(data['recommended'])}, "
        "then `amygdala-daemon rebuild`",
    ]
    return "\n".join(lines)


def auroc_matrix(data: dict[str, Any]) -> Any:
    """`[n_concepts, n_layers]` AUROC for plotting, NaN where undefined."""
    return np.array(
        [
            [
                math.nan if c["auroc"][str(layer)] is None else c["auroc"][str(layer)]
                for layer in data["layers"]
            ]
            for c in data["concepts"]
        ],
        np.float64,
    )
