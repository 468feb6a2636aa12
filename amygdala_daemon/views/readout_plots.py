"""PNG figures for `evaluate --plots` and `probe --tokens --plots`: matplotlib, optional.

Like `plots`, matplotlib is imported only when a figure is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.views.evaluate import ConceptPoints, RatedEvaluation
from amygdala_daemon.views.plots import require_matplotlib, save_figure

# Token maps: a monospaced layout, a token as wide as its characters. DejaVu Sans Mono
# (matplotlib's own) advances 0.602 em per character.
LINE_CHARS = 72
FONT_PT = 10.0
CHAR_WIDTH_IN = 0.602 * FONT_PT / 72
LINE_HEIGHT_IN = 0.3
TITLE_IN = 0.32
HEADER_IN = 0.55
MARGIN_IN = 0.15
COLORBAR_IN = 1.3


def _jitter(count: int, width: float) -> Any:
    # Seeded: the same file draws the same picture.
    return np.random.default_rng(0).uniform(-width, width, count)


def rating_scatter(path: Path, row: dict[str, Any], points: ConceptPoints) -> Path:
    """z-score at the best layer against the rating, with a least-squares line."""
    plt = require_matplotlib()
    figure, ax = plt.subplots(figsize=(6.4, 4.8))
    spread = float(np.ptp(points.values)) or 1.0
    ax.scatter(
        points.values + _jitter(points.values.size, 0.012 * spread),
        points.z,
        s=22,
        alpha=0.65,
        color="tab:blue",
        edgecolors="none",
    )
    slope, intercept = np.polyfit(points.values, points.z, 1)
    xs = np.array([points.values.min(), points.values.max()])
    ax.plot(xs, slope * xs + intercept, color="tab:red", linewidth=1.5, label="least squares")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":", label="negatives' mean")
    cell = row["layers"][str(points.layer)]
    ax.set_title(
        f"{row['name']} at layer {points.layer}: Pearson r {cell['pearson']:.2f}, "
        f"Spearman r {cell['spearman']:.2f} (n {row['n']})",
        fontsize=11,
    )
    ax.set_xlabel("rating (points jittered sideways)")
    ax.set_ylabel("projection z-score (negatives' calibration)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.25)
    return save_figure(plt, figure, path)


def label_strip(path: Path, row: dict[str, Any], points: ConceptPoints) -> Path:
    """z-score at the best layer of the false and the true texts: boxes with every point."""
    plt = require_matplotlib()
    figure, ax = plt.subplots(figsize=(5.2, 4.8))
    groups = [points.z[points.values == 0.0], points.z[points.values == 1.0]]
    ax.boxplot(groups, positions=[0, 1], widths=0.5, showfliers=False)
    for position, (group, color) in enumerate(zip(groups, ("tab:blue", "tab:orange"), strict=True)):
        xs = position + _jitter(group.size, 0.12)
        ax.scatter(xs, group, s=20, alpha=0.7, color=color, edgecolors="none", zorder=3)
    ax.set_xticks([0, 1], [f"false (n {groups[0].size})", f"true (n {groups[1].size})"])
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    cell = row["layers"][str(points.layer)]
    ax.set_title(f"{row['name']} at layer {points.layer}: AUROC {cell['auroc']:.2f}", fontsize=11)
    ax.set_ylabel("projection z-score (negatives' calibration)")
    ax.grid(alpha=0.25, axis="y")
    return save_figure(plt, figure, path)


def write_evaluate_plots(directory: Path, evaluation: RatedEvaluation) -> list[Path]:
    """One PNG per evaluated concept: `evaluate_<concept>.png`."""
    written = []
    for row in evaluation.data["concepts"]:
        points = evaluation.points[row["name"]]
        path = directory / f"evaluate_{row['name']}.png"
        draw = label_strip if row["kind"] == "label" else rating_scatter
        written.append(draw(path, row, points))
    return written


def _layout(tokens: list[str]) -> tuple[list[tuple[int, int, int]], int]:
    """(line, column, width) of each token, wrapped at `LINE_CHARS`; and the line count."""
    placed = []
    line = column = 0
    for token in tokens:
        width = max(1, len(token))
        if column and column + width > LINE_CHARS:
            line, column = line + 1, 0
        placed.append((line, column, width))
        column += width
        if token.endswith("\n"):
            line, column = line + 1, 0
    return placed, line + 1


def _scale(result: dict[str, Any]) -> float:
    """The colour limit: the largest |z| over the shown cells that are not sinks."""
    values: list[float] = [
        abs(token["z"][concept][str(layer)])
        for concept, layer in result["layer"].items()
        for token in result["tokens"]
        if layer not in token["sink"]
    ]
    return max([2.0, *values])


def token_map(path: Path, result: dict[str, Any]) -> Path:
    """The text laid out as tokens, one panel per top concept, coloured by z-score.

    Axes are placed in inches, and the monospaced font is sized so one character is one
    unit wide: a token's box is exactly as wide as its text.
    """
    plt = require_matplotlib()
    from matplotlib.colors import TwoSlopeNorm

    shown = [token["token"].replace("\n", "\u21b5\n") for token in result["tokens"]]
    placed, n_lines = _layout(shown)
    limit = _scale(result)
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    cmap = plt.get_cmap("RdBu_r")
    concepts = result["top"]
    axes_width = LINE_CHARS * CHAR_WIDTH_IN
    panel = TITLE_IN + n_lines * LINE_HEIGHT_IN
    width = MARGIN_IN + axes_width + COLORBAR_IN
    height = HEADER_IN + panel * len(concepts) + MARGIN_IN
    figure = plt.figure(figsize=(width, height))
    for index, concept in enumerate(concepts):
        bottom = height - HEADER_IN - (index + 1) * panel
        ax = figure.add_axes(
            (
                MARGIN_IN / width,
                bottom / height,
                axes_width / width,
                n_lines * LINE_HEIGHT_IN / height,
            )
        )
        _token_panel(ax, result, concept, shown, placed, cmap, norm, limit)
        ax.set_xlim(0, LINE_CHARS)
        ax.set_ylim(n_lines, 0)
        ax.axis("off")
    bar_axes = figure.add_axes(
        (
            (MARGIN_IN + axes_width + 0.25) / width,
            MARGIN_IN / height,
            0.16 / width,
            (panel * len(concepts) - TITLE_IN) / height,
        )
    )
    bar = figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=bar_axes)
    bar.set_label("z-score per token (negatives' calibration)")
    figure.text(
        MARGIN_IN / width,
        1.0 - 0.12 / height,
        "where each concept fires, token by token\ngrey dashed: a sink (position 0 or an "
        "outlier norm), left out of pooling and of the colour scale",
        fontsize=9,
        va="top",
    )
    return save_figure(plt, figure, path)


def _token_panel(
    ax: Any,
    result: dict[str, Any],
    concept: str,
    shown: list[str],
    placed: list[tuple[int, int, int]],
    cmap: Any,
    norm: Any,
    limit: float,
) -> None:
    """One concept's row: a box per token, filled by its z at the concept's layer."""
    from matplotlib.patches import Rectangle

    layer = result["layer"][concept]
    for token, text, (line, column, span) in zip(result["tokens"], shown, placed, strict=True):
        z = token["z"][concept][str(layer)]
        sink = layer in token["sink"]
        ax.add_patch(
            Rectangle(
                (column, line + 0.05),
                span,
                0.9,
                facecolor="lightgrey" if sink else cmap(norm(z)),
                edgecolor="black" if sink else "white",
                linestyle="--" if sink else "-",
                linewidth=0.6,
            )
        )
        ax.text(
            column,
            line + 0.5,
            text.rstrip("\n"),
            family="DejaVu Sans Mono",
            fontsize=FONT_PT,
            va="center",
            ha="left",
            color="white" if not sink and abs(z) > 0.6 * limit else "black",
        )
    mean = float(np.mean(list(result["mean_z"][concept].values())))
    ax.set_title(f"{concept}, layer {layer} (mean z {mean:+.2f})", fontsize=10, loc="left")


def write_token_plots(directory: Path, results: list[dict[str, Any]]) -> list[Path]:
    """One PNG per text: `tokens_<n>.png`, numbered from 1 in input order."""
    return [token_map(directory / f"tokens_{n}.png", r) for n, r in enumerate(results, start=1)]
