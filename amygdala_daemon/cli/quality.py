"""Command line for `report`, `layers`, `evaluate` and `probe --tokens`: flags, library, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from amygdala_daemon.cli.common import config_from_args
from amygdala_daemon.core.config import Method
from amygdala_daemon.core.errors import InputError

if TYPE_CHECKING:
    from amygdala_daemon.cli.common import Subcommands


def check_plots_dir(directory: str | None) -> Path | None:
    """`--plots DIR` checked before any work: absent (to be made) or a directory."""
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
    plots = check_plots_dir(args.plots)
    if plots is not None:
        # Before the report is built and printed: a missing extra is the only output.
        from amygdala_daemon.views.plots import require_matplotlib

        require_matplotlib()
    report = build_report(
        config_from_args(args), crosstalk_threshold=args.crosstalk_threshold, method=args.method
    )
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
    plots = check_plots_dir(args.plots)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from amygdala_daemon.views.evaluate import evaluate_rated, format_evaluation

    plots = check_plots_dir(args.plots)
    if plots is not None:
        # Fail before the model is loaded, not after.
        from amygdala_daemon.views.plots import require_matplotlib

        require_matplotlib()
    evaluation = evaluate_rated(config_from_args(args), Path(args.file))
    data = evaluation.data
    print(json.dumps(data, indent=2) if args.json else format_evaluation(data))
    if plots is not None:
        from amygdala_daemon.views.readout_plots import write_evaluate_plots

        for path in write_evaluate_plots(plots, evaluation):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def probe_tokens_command(args: argparse.Namespace, texts: list[str]) -> int:
    """`probe --tokens`: per-token readouts, a table or JSON, and a token map per text."""
    from amygdala_daemon.views.tokens import format_tokens, probe_tokens

    plots = check_plots_dir(args.plots)
    if plots is not None:
        from amygdala_daemon.views.plots import require_matplotlib

        require_matplotlib()
    results = probe_tokens(config_from_args(args), texts, top=args.top, layer=args.layer)
    print(json.dumps(results, indent=2) if args.json else format_tokens(results))
    if plots is not None:
        from amygdala_daemon.views.readout_plots import write_token_plots

        for path in write_token_plots(plots, results):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def add_quality_commands(commands: Subcommands) -> None:
    """Add `report`, `layers` and `evaluate` to the main parser's subcommands."""
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
    report.add_argument(
        "--method",
        choices=get_args(Method),
        help="score and compare the concepts as this direction method would fit them from the "
        "same ledger, instead of the published vectors (nothing is published)",
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
    _add_evaluate(commands)


def _add_evaluate(commands: Subcommands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score the published vectors against rated text (Pearson/Spearman r, AUROC)",
        description="Read-only: run each rated text through the model (pooled as the manifest "
        "says, tag lines stripped), project it onto the published vectors, and report per "
        "concept and layer Pearson and Spearman r against ratings, or AUROC against true/false "
        "labels, with the best layer per concept. RATED is JSONL, one object per line: "
        '{"text": "...", "joy": 7, "proud": true} (every key but text and id is a concept; '
        "null: not rated), or TSV with a header row text<TAB>joy<TAB>... A concept whose values "
        "are all 0 or 1 counts as labels. Concepts the vectors lack are listed as skipped.",
    )
    evaluate.add_argument("--file", required=True, metavar="RATED", help="the rated texts")
    evaluate.add_argument("--json", action="store_true", help="everything, as one JSON object")
    evaluate.add_argument(
        "--plots",
        metavar="DIR",
        help="also write DIR/evaluate_<concept>.png: z-score at the best layer against the "
        "rating, or a box plot per label (needs matplotlib)",
    )
    evaluate.set_defaults(func=cmd_evaluate)
