"""What every subcommand module shares: config from the global flags, progress bars, stdout."""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from amygdala_daemon.core.config import Config
from amygdala_daemon.model.names import check_model_config
from amygdala_daemon.store.config_file import load

if TYPE_CHECKING:
    # The subparsers object `add_subparsers` returns; generic only to type checkers.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (or defaults), with `--state-dir` applied, read and checked once.

    `main` calls this before any command imports the model libraries, so a bad value is
    reported within a second rather than after torch has loaded.
    """
    cached: Config | None = getattr(args, "checked_config", None)
    if cached is not None:
        return cached
    config = load(args.config)
    if args.state_dir:
        config = replace(config, state_dir=args.state_dir)
    check_model_config(config.model)
    args.checked_config = config
    return config


def progress_bar(total: int, label: str, unit: str = "node") -> Any:
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=None)


def stdout_closed() -> bool:
    """True when nobody reads stdout any more: its pipe's read end is closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


BROKEN_PIPE_EXIT = 141
"""A reader that stopped reading (`| head`): the status a shell gives a tool SIGPIPE ended."""


def quiet_on_broken_pipe(run: Callable[[], int]) -> int:
    """`run()`, with stdout flushed before it returns; 141, quietly, when nobody reads it."""
    try:
        try:
            return run()
        finally:
            # Flushed here, not at interpreter exit, where a closed pipe is a traceback.
            sys.stdout.flush()
    except BrokenPipeError:
        # Whatever is still buffered has nowhere to go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
