"""`rebuild --ray [ADDRESS] --workers N`: flags over the config's [distributed] table."""

from __future__ import annotations

import argparse
from dataclasses import replace

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import InputError


def add_distributed_flags(rebuild: argparse.ArgumentParser) -> None:
    rebuild.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the model on Ray workers: alone, on a local Ray started for this rebuild; "
        "`auto` or a cluster address joins that cluster (overrides [distributed])",
    )
    rebuild.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray workers (default distributed.workers: one per GPU, or per CPU without GPUs)",
    )


def rebuild_config(config: Config, args: argparse.Namespace) -> Config:
    """The config with `--ray` and `--workers` applied over its [distributed] table."""
    settings = config.distributed
    if args.ray is not None:
        settings = replace(settings, engine="ray", address=args.ray)
    if args.workers is not None:
        if args.workers < 1:
            raise InputError(f"rebuild: --workers must be at least 1, got {args.workers}")
        if settings.engine != "ray":
            raise InputError("rebuild: --workers goes with --ray (or distributed.engine = 'ray')")
        settings = replace(settings, workers=args.workers)
    if args.from_cache and args.ray is not None:
        raise InputError("rebuild: --from-cache runs no model, so it takes no --ray")
    return replace(config, distributed=settings)
