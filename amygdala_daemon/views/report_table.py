"""The `report` table: the `report --json` object as text for a terminal."""

from __future__ import annotations

from typing import Any


def _num(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _header_lines(data: dict[str, Any]) -> list[str]:
    previous = data["previous_generation"]
    return [
        f"generation {data['generation']} of {data['model_id']}, method {data['method']}, "
        f"ledger seq {data['ledger_seq']}",
        "AUROC and d are held out: each node is scored by a direction fit without its bucket",
        f"  ({data['held_out']})",
        "drift: lowest cosine over layers to the same row in "
        + (f"generation {previous}" if previous is not None else "the previous generation (none)"),
        "",
    ]


def _column_heads(layers: list[int], name_width: int) -> list[str]:
    """Two heading lines: the layers, then what each column holds."""
    head = f"{'':<{name_width}} {'':>5} {'':>5}"
    sub = f"{'concept':<{name_width}} {'n_pos':>5} {'n_neg':>5}"
    for layer in layers:
        head += f"  {'layer ' + str(layer):^12}"
        sub += f"  {'AUROC':>6} {'d':>5}"
    head += f"  {'mean':>5}  {'':>5}"
    sub += f"  {'AUROC':>5}  {'drift':>5}"
    return [head.rstrip(), sub]


def _concept_line(row: dict[str, Any], layers: list[int], name_width: int) -> str:
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
    return line


def _table_lines(data: dict[str, Any]) -> list[str]:
    """Concepts from the best mean AUROC down, then the mean over everything."""
    layers: list[int] = data["layers"]
    name_width = max([len("concept"), *(len(r["name"]) for r in data["concepts"])])
    ordered = sorted(
        data["concepts"],
        key=lambda r: (-(r["mean_auroc"] if r["mean_auroc"] is not None else -1.0), r["name"]),
    )
    return [
        *_column_heads(layers, name_width),
        *(_concept_line(row, layers, name_width) for row in ordered),
        f"mean held-out AUROC over concepts and layers: {_num(data['mean_auroc'], 0, 3)}",
    ]


def _crosstalk_lines(crosstalk: dict[str, Any]) -> list[str]:
    """Flagged pairs, one line per pair: its highest cosine and the layers it is flagged at."""
    lines = ["", f"cross-talk: pairs whose vectors have cosine > {crosstalk['threshold']:.2f}"]
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for flag in crosstalk["flagged"]:
        by_pair.setdefault((flag["first"], flag["second"]), []).append(flag)
    if not by_pair:
        return [*lines, "  none"]
    pair_width = max(len(f"{a} / {b}") for a, b in by_pair)
    lines.append(f"  {'pair':<{pair_width}}  {'max cos':>7}  {'both +':>6}  {'Jaccard':>7}  layers")
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
    return lines


def _unpublished_lines(unpublished: dict[str, str]) -> list[str]:
    lines = ["", "tags seen but not published:"]
    if not unpublished:
        lines.append("  none")
    width = max((len(name) for name in unpublished), default=0)
    return lines + [f"  {name:<{width}}  {why}" for name, why in unpublished.items()]


def format_report(data: dict[str, Any]) -> str:
    """The table: one row per concept, AUROC and d per layer; flagged pairs; unpublished."""
    return "\n".join(
        [
            *_header_lines(data),
            *_table_lines(data),
            *_crosstalk_lines(data["crosstalk"]),
            *_unpublished_lines(data["unpublished"]),
        ]
    )
