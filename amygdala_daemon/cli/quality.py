"""Command line for `report` and `layers`: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amygdala_daemon.cli.common import config_from_args
from amygdala_daemon.core.errors import InputError

if TYPE_CHECKING:
    from amygdala_daemon.cli.common import Subcommands


def _check_plots_dir(directory: str | None) -> Path | None:
    if directory is None:
        return None
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise InputError(f"--plots: {directory} exists and is not a directory")
    return path


def cmd_report(args: argparse.Namespace) -> int:
    from amygdala_daemon.views.report import build_report
    from amygdala_daemon.views.report_table import format_report

    if not 0.0 <= args.crosstalk_threshold <= 1.0:
        raise InputError(
            f"--crosstalk-threshold: {args.crosstalk_threshold} is not between 0 and 1"
        )
    plots = _check_plots_dir(args.plots)
    report = build_report(config_from_args(args), crosstalk_threshold=args.crosstalk_threshold)
    print(json.dumps(report.data, indent=2) if args.json else format_report(report.data))
    if plots is not None:
        from amygdala_daemon.views.plots import write_report_plots

        for path in write_report_plots(plots, report.data, report.scores):
            # stderr: `report --json --plots DIR | jq` must still get clean JSON.
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from amygdala_daemon.views.layers import auroc_matrix, format_layers, layer_sweep

    if args.sample < 0:
        raise InputError(f"--sample: {args.sample} is negative (0 means every eligible node)")
    plots = _check_plots_dir(args.plots)
    if plots is not None:
        # Fail before minutes of model work, not after.
        from amygdala_daemon.views.plots import require_matplotlib

        require_matplotlib()
    data = layer_sweep(config_from_args(args), sample=args.sample)
    print(json.dumps(data, indent=2) if args.json else format_layers(data))
    if plots is not None:
        from amygdala_daemon.views.plots import auroc_heatmap

        path = auroc_heatmap(
            plots / "layer_sweep.png",
            [c["name"] for c in data["concepts"]],
            data["layers"],
            auroc_matrix(data),
            f"held-out AUROC by layer, {data['sample']} nodes ({data['model_id']})",
            highlight=data["recommended"],
        )
        print(f"wrote {path}", file=sys.stderr)
    return 0


def add_quality_commands(commands: Subcommands) -> None:
    """Add `report` and `layers` to the main parser's subcommands."""
    report = commands.add_parser(
        "report",
        help="per-layer separation (AUROC), cross-talk, drift, calibration",
        description="Read-only, no model needed: score every stored node with a direction fit "
        "without it (5 buckets by sha256 of the node id) and show, per published concept and "
        "layer, the held-out AUROC and Cohen's d, the counts, the drift from the previous "
        "generation, the cross-talk between concept vectors beside how often their tags "
        "co-occur, and the tags that were not published and why.",
    )
    report.add_argument("--json", action="store_true", help="everything, as one JSON object")
    report.add_argument(
        "--plots",
        metavar="DIR",
        help="also write PNGs: cross-talk heatmap, AUROC by layer, histograms of the weakest "
        "concepts (needs matplotlib: pip install 'amygdala-daemon[plots]')",
    )
    report.add_argument(
        "--crosstalk-threshold",
        type=float,
        default=0.5,
        metavar="COS",
        help="flag concept pairs whose vectors have a cosine above this (default 0.5)",
    )
    report.set_defaults(func=cmd_report)

    layers = commands.add_parser(
        "layers",
        help="sweep all layers on a sample; recommend target layers",
        description="Load the model, capture every decoder block for a deterministic sample of "
        "eligible nodes (lowest sha256 of the id first), score each layer by held-out AUROC, "
        "and recommend up to 4 target layers, at least 3 blocks apart, beside the "
        "60-80%-of-depth rule of thumb. Writes nothing to the state directory.",
    )
    layers.add_argument(
        "--sample",
        type=int,
        default=300,
        metavar="N",
        help="nodes to run through the model (default 300; 0: every eligible node)",
    )
    layers.add_argument("--json", action="store_true", help="everything, as one JSON object")
    layers.add_argument(
        "--plots", metavar="DIR", help="also write DIR/layer_sweep.png (needs matplotlib)"
    )
    layers.set_defaults(func=cmd_layers)
