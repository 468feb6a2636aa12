"""Do the published vectors generalize? Projections of rated text against the ratings.

Each text goes through the model the daemon uses, pooled as the manifest says, tag lines
stripped (as `probe` does), and is projected onto every published vector. Per concept and
layer: Pearson and Spearman r against ratings, or AUROC against true/false labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.correlation import pearson, spearman
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.quality import auroc, finite_or_none
from amygdala_daemon.core.rated import RatedConcept, RatedTexts, parse_rated
from amygdala_daemon.views.probe import Published, model_input, open_extractor, read_published

Array = npt.NDArray[np.float64]


@dataclass
class ConceptPoints:
    """One concept's values and z-scores at its best layer: what its plot shows."""

    kind: str
    values: Array
    z: Array
    layer: int


@dataclass
class RatedEvaluation:
    """`data` is the `evaluate --json` object; `points` feed the plots."""

    data: dict[str, Any]
    points: dict[str, ConceptPoints] = field(default_factory=dict)


def read_rated(path: Path) -> RatedTexts:
    """A rated JSONL or TSV file, parsed (see `core.rated` for the format)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"evaluate: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"evaluate: {path} is not UTF-8 text") from None
    return parse_rated(raw, str(path))


def _concepts_to_score(rated: RatedTexts, published: Published) -> tuple[list[str], list[str]]:
    """(evaluated, skipped): in file order; skipped ones are not in the published vectors."""
    evaluated = [name for name in rated.concepts if name in published.concepts]
    skipped = [name for name in rated.concepts if name not in published.concepts]
    if not evaluated:
        found = ", ".join(rated.concepts) or "none"
        raise InputError(
            f"evaluate: {rated.source}: none of its concepts ({found}) is in the published "
            f"vectors ({', '.join(published.concepts)})"
        )
    for name in evaluated:
        rated.concepts[name].check(rated.source)
    return evaluated, skipped


def _projections(config: Config, published: Published, texts: list[str]) -> Array:
    """Raw projections `[n_texts, n_layers, n_concepts]`."""
    extractor = open_extractor(config, published, "evaluate")
    extractions = extractor.extract([model_input(text) for text in texts])
    out = np.empty((len(texts), len(published.layers), len(published.concepts)), np.float64)
    for row, extraction in enumerate(extractions):
        if extraction.activations is None:
            raise AmygdalaError(f"evaluate: text {row + 1}: {extraction.error}")
        activations = extraction.activations.astype(np.float64)
        for i, layer in enumerate(published.layers):
            out[row, i] = published.vectors[layer] @ activations[i]
    return out


def _score_layer(concept: RatedConcept, projection: Array) -> dict[str, float | None]:
    values = np.asarray(concept.values, np.float64)
    if concept.kind == "label":
        positive = values == 1.0
        return {"auroc": finite_or_none(auroc(projection[positive], projection[~positive]))}
    return {
        "pearson": finite_or_none(pearson(projection, values)),
        "spearman": finite_or_none(spearman(projection, values)),
    }


def _score_concept(
    concept: RatedConcept, published: Published, projections: Array
) -> tuple[dict[str, Any], ConceptPoints]:
    """The concept's JSON row, and the points of its best layer."""
    column = published.concepts.index(concept.name)
    metric = "auroc" if concept.kind == "label" else "pearson"
    per_layer = {
        str(layer): _score_layer(concept, projections[concept.rows, i, column])
        for i, layer in enumerate(published.layers)
    }
    scored = [(cell[metric], int(layer)) for layer, cell in per_layer.items()]
    finite = [(value, layer) for value, layer in scored if value is not None]
    # Highest first; on a tie the shallower layer, which is cheaper to hook.
    best_value, best_layer = max(finite, key=lambda vl: (vl[0], -vl[1]), default=(None, None))
    row: dict[str, Any] = {"name": concept.name, "kind": concept.kind, "n": len(concept.rows)}
    if concept.kind == "label":
        row["n_true"] = int(sum(concept.values))
        row["n_false"] = len(concept.values) - row["n_true"]
    row.update(metric=metric, layers=per_layer, best_layer=best_layer, best=best_value)
    shown = best_layer if best_layer is not None else published.layers[0]
    raw = projections[concept.rows, published.layers.index(shown), column]
    z = np.array([published.z(concept.name, shown, float(v)) for v in raw], np.float64)
    return row, ConceptPoints(concept.kind, np.asarray(concept.values, np.float64), z, shown)


def evaluate_rated(config: Config, path: Path) -> RatedEvaluation:
    """Score the current generation against the rated file at `path`.

    Bad input (the file, its rows, too few values for a concept) is raised before the model
    is loaded.
    """
    rated = read_rated(path)
    published = read_published(config, "evaluate")
    evaluated, skipped = _concepts_to_score(rated, published)
    # Only the texts some evaluated concept rates go through the model.
    needed = sorted({row for name in evaluated for row in rated.concepts[name].rows})
    scored = _projections(config, published, [rated.texts[row] for row in needed])
    projections = np.full((len(rated.texts), *scored.shape[1:]), math.nan, np.float64)
    projections[needed] = scored
    evaluation = RatedEvaluation(
        {
            "file": str(path),
            "generation": published.manifest["generation"],
            "model_id": published.manifest["model_id"],
            "method": published.manifest["method"],
            "layers": published.layers,
            "texts": len(rated.texts),
            "scored_texts": len(needed),
            "concepts": [],
            "skipped": skipped,
        }
    )
    for name in evaluated:
        row, points = _score_concept(rated.concepts[name], published, projections)
        evaluation.data["concepts"].append(row)
        evaluation.points[name] = points
    return evaluation


def _cell(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def _table(rows: list[dict[str, Any]], layers: list[int], kind: str) -> list[str]:
    labels = kind == "label"
    header = f"{'concept':<16}{'n':>5}" + (f"{'true':>6}" if labels else "")
    header += "".join(
        f"{'layer ' + str(layer):>10}" if labels else f"{'layer ' + str(layer):>15}"
        for layer in layers
    )
    lines = [header + "   best"]
    for row in rows:
        line = f"{row['name']:<16}{row['n']:>5}" + (f"{row['n_true']:>6}" if labels else "")
        for layer in layers:
            cell = row["layers"][str(layer)]
            if labels:
                line += _cell(cell["auroc"], 10)
            else:
                line += _cell(cell["pearson"], 8) + " (" + _cell(cell["spearman"], 4) + ")"
        best = "-" if row["best"] is None else f"layer {row['best_layer']}: {row['best']:.2f}"
        lines.append(f"{line}   {best}")
    return lines


def format_evaluation(data: dict[str, Any]) -> str:
    """A readable table: ratings first, then labels, then what was skipped."""
    lines = [
        f"{data['scored_texts']} of {data['texts']} texts from {data['file']}, scored on "
        f"generation {data['generation']} of {data['model_id']} ({data['method']})",
    ]
    ratings = [row for row in data["concepts"] if row["kind"] == "rating"]
    labels = [row for row in data["concepts"] if row["kind"] == "label"]
    if ratings:
        lines += ["", "ratings: Pearson r (Spearman r) of the projection against the rating"]
        lines += _table(ratings, data["layers"], "rating")
    if labels:
        lines += ["", "labels: AUROC, P(a true text projects above a false one); 0.5 = chance"]
        lines += _table(labels, data["layers"], "label")
    if data["skipped"]:
        lines += ["", f"skipped, not in the published vectors: {', '.join(data['skipped'])}"]
    return "\n".join(lines)
