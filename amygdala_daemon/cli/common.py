"""What every subcommand module shares: config from the global flags, progress bars."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from amygdala_daemon.core.config import Config
from amygdala_daemon.store.config_file import load

if TYPE_CHECKING:
    # The subparsers object `add_subparsers` returns; generic only to type checkers.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (or defaults), with `--state-dir` applied."""
    config = load(args.config)
    if args.state_dir:
        config = replace(config, state_dir=args.state_dir)
    return config


def progress_bar(total: int, label: str, unit: str = "node") -> Any:
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=None)
