"""PNG figures for `report --plots` and `layers --plots`: matplotlib, an optional extra.

matplotlib is imported only here and only when a plot is asked for, with the Agg backend, so
a headless server never needs a display and the daemon never needs matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.quality import Scores

MISSING_MATPLOTLIB = "--plots needs matplotlib: pip install 'amygdala-daemon[plots]'"


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise InputError(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # tight: long concept names and rotated ticks must never be clipped.
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def crosstalk_heatmap(
    path: Path,
    concepts: Sequence[str],
    cosines: Mapping[int, Any],
    both_positive: Any,
) -> Path:
    """One cosine heatmap per layer, and how often the tags co-occur beside them."""
    plt = require_matplotlib()
    panels: list[tuple[str, Any, str, float, float, str, str]] = [
        (f"layer {layer}: cosine between vectors", matrix, "RdBu_r", -1.0, 1.0, ".2f", "cosine")
        for layer, matrix in cosines.items()
    ]
    together = np.array(both_positive, np.float64)
    # The diagonal (a concept with itself) would set the colour scale and hide the rest.
    np.fill_diagonal(together, np.nan)
    top = max(1.0, float(np.nanmax(together)) if together.size > 1 else 1.0)
    panels.append(
        ("tag co-occurrence: nodes positive for both", together, "Greens", 0.0, top, ".0f", "nodes")
    )
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    side = max(5.0, 0.42 * len(concepts) + 2.0)
    figure, axes = plt.subplots(
        rows, columns, figsize=(side * columns, side * rows * 0.92), squeeze=False
    )
    annotate = len(concepts) <= 16
    for ax, (title, matrix, cmap, low, high, style, unit) in zip(axes.flat, panels, strict=False):
        values = np.asarray(matrix, np.float64)
        image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high)
        ax.set_title(title, fontsize=11)
        ax.set_xticks(range(len(concepts)), concepts, rotation=60, ha="right", fontsize=9)
        ax.set_yticks(range(len(concepts)), concepts, fontsize=9)
        if annotate:
            for i in range(len(concepts)):
                for j in range(len(concepts)):
                    if i == j or math.isnan(values[i, j]):
                        continue
                    dark = abs(values[i, j]) > 0.6 * max(abs(low), abs(high))
                    ax.text(
                        j,
                        i,
                        format(values[i, j], style),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label(unit)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(
        "cross-talk: cosine between published concept vectors (red: same direction), "
        "beside how often their tags co-occur",
        fontsize=13,
    )
    # Leave the top strip to the suptitle, so it never sits on a panel title.
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.97))
    return save_figure(plt, figure, path)


def auroc_heatmap(
    path: Path,
    concepts: Sequence[str],
    layers: Sequence[int],
    auroc: Any,
    title: str,
    highlight: Sequence[int] = (),
) -> Path:
    """Held-out AUROC, concepts down and layers across; `highlight` marks chosen layers."""
    plt = require_matplotlib()
    values = np.asarray(auroc, np.float64)
    width = max(6.0, 0.72 * len(layers) + 3.5)
    height = max(4.0, 0.42 * len(concepts) + 1.8)
    figure, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(values, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(
        "layer (output of decoder block i)" + ("; * recommended" if highlight else ""),
        fontsize=10,
    )
    ax.set_ylabel("concept")
    labels = [f"{layer}*" if layer in highlight else str(layer) for layer in layers]
    ax.set_xticks(range(len(layers)), labels, fontsize=9)
    ax.set_yticks(range(len(concepts)), concepts, fontsize=9)
    if len(layers) <= 32:
        for i in range(len(concepts)):
            for j in range(len(layers)):
                if not math.isnan(values[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8 if len(layers) <= 12 else 6.5,
                        color="black" if values[i, j] > 0.8 else "white",
                    )
    bar = figure.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("held-out AUROC (0.5 = chance)")
    return save_figure(plt, figure, path)


def projection_histograms(
    path: Path,
    concepts: Sequence[str],
    layers: Sequence[int],
    scores: Mapping[str, Scores],
) -> Path:
    """Held-out scores of positives against negatives: a row per concept, a column per layer."""
    plt = require_matplotlib()
    shown = [name for name in concepts if name in scores] or list(concepts)[:1]
    columns = max(1, len(layers))
    figure, axes = plt.subplots(
        len(shown),
        columns,
        figsize=(3.6 * columns + 0.5, 2.8 * len(shown) + 0.6),
        squeeze=False,
    )
    for r, name in enumerate(shown):
        found = scores.get(name)
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            if found is None or found.positive.size == 0 or found.negative.size == 0:
                ax.text(0.5, 0.5, "no held-out scores", ha="center", transform=ax.transAxes)
            else:
                pos, neg = found.positive[:, c], found.negative[:, c]
                edges = np.histogram_bin_edges(np.concatenate([pos, neg]), bins=24)
                ax.hist(neg, bins=edges, density=True, alpha=0.55, color="tab:blue")
                ax.hist(pos, bins=edges, density=True, alpha=0.55, color="tab:orange")
                ax.set_title(
                    f"{name}, layer {layer}\nAUROC {found.auroc(c):.2f}, d {found.cohens_d(c):.2f}"
                    f" ({pos.size} pos, {neg.size} neg)",
                    fontsize=9,
                )
            ax.set_xlabel("held-out score (projection - training midpoint)", fontsize=8)
            ax.set_ylabel("density", fontsize=8)
            ax.tick_params(labelsize=7)
    figure.suptitle("weakest concepts: held-out scores of positives and negatives", fontsize=12)
    figure.tight_layout()
    # One legend for the figure, above the panels, where it covers no bars.
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=color, alpha=0.55) for color in ("tab:blue", "tab:orange")
    ]
    figure.legend(
        handles,
        ["negatives", "positives"],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        fontsize=10,
    )
    return save_figure(plt, figure, path)


def write_report_plots(
    directory: Path, data: dict[str, Any], scores: Mapping[str, Scores]
) -> list[Path]:
    """The three report figures: cross-talk, AUROC by layer, histograms of the weakest."""
    # Best first, as the table prints them: the weak ones collect at the bottom.
    rows = sorted(
        data["concepts"],
        key=lambda r: (-(r["mean_auroc"] if r["mean_auroc"] is not None else -1.0), r["name"]),
    )
    concepts: list[str] = [row["name"] for row in rows]
    layers: list[int] = data["layers"]
    crosstalk = data["crosstalk"]
    cosines = {
        int(layer): np.array(
            [[math.nan if v is None else v for v in line] for line in matrix], np.float64
        )
        for layer, matrix in crosstalk["cosine"].items()
    }
    auroc = np.array(
        [
            [
                math.nan
                if row["layers"][str(layer)]["auroc"] is None
                else row["layers"][str(layer)]["auroc"]
                for layer in layers
            ]
            for row in rows
        ],
        np.float64,
    )
    return [
        crosstalk_heatmap(
            directory / "crosstalk.png",
            crosstalk["concepts"],
            cosines,
            data["cooccurrence"]["both_positive"],
        ),
        auroc_heatmap(
            directory / "auroc_by_layer.png",
            concepts,
            layers,
            auroc,
            f"held-out AUROC by layer (generation {data['generation']})",
        ),
        projection_histograms(
            directory / "projections_weakest.png", data["weakest"], layers, scores
        ),
    ]
