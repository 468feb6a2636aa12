"""Command line: each subcommand parses its flags, builds library objects and calls one method."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from amygdala_daemon import __version__
from amygdala_daemon.cli.common import (
    config_from_args,
    progress_bar,
    quiet_on_broken_pipe,
    stdout_closed,
)
from amygdala_daemon.cli.publish import cmd_publish
from amygdala_daemon.cli.publish import fire_hooks as _fire_hooks
from amygdala_daemon.cli.rebuild_flags import add_distributed_flags, rebuild_config
from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.paths import StatePaths

if TYPE_CHECKING:
    from amygdala_daemon.cli.common import Subcommands
    from amygdala_daemon.core.manifest import Manifest

log = logging.getLogger("amygdala_daemon")

DESCRIPTION = """\
Keep emotion readout vectors fresh from an agent's memory graph.

Nodes whose trailing tag line scores an emotion (`warmth:9 clarity:10`) are run through the
model once each; their pooled activations are folded into per-emotion statistics, and the
unit directions mean(with) - mean(without) are published for vLLM as
<state_dir>/published/current/vectors.safetensors + manifest.json.

With no configuration it runs on the bundled sample graph and the bundled SmolLM2-135M model.
"""


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_rebuild(args: argparse.Namespace) -> int:
    from amygdala_daemon.engine.writer import Engine
    from amygdala_daemon.sources import open_source

    config = rebuild_config(config_from_args(args), args)
    engine = Engine(config, progress=progress_bar, for_full_rebuild=not args.from_cache)
    # SIGTERM stops a rebuild the way Ctrl-C does: with the one line below, not a kill.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    identity = engine.ledger.ledger_id
    try:
        source = open_source(config.source)
        report = engine.rebuild(source, from_cache=args.from_cache)
        manifest = _current(config)
    except KeyboardInterrupt:
        kept = _current(config)
        generation = "none" if kept is None else f"generation {kept['generation']}"
        if engine.ledger.ledger_id == identity:
            done = "the previous ledger, checkpoint and published vectors are kept"
        else:
            done = "the new ledger is in place; `amygdala-daemon publish --force` publishes it"
        print(
            f"amygdala-daemon: rebuild interrupted: {done} ({generation} is current)",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.close()
    if manifest is not None:
        _fire_hooks(config, (_current_dir(config)).resolve())
    if not args.from_cache:
        print(f"rebuild: {report.summary()}")
    if manifest is None:
        print("rebuild: nothing to publish (no eligible node)")
    else:
        print(
            f"published generation {manifest['generation']}: {len(manifest['concepts'])} "
            f"concepts x layers {manifest['layers']} -> {_current_dir(config)}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from amygdala_daemon.serving.daemon import Daemon

    config = config_from_args(args)
    daemon = Daemon(config, config_path=args.config)
    if args.confirm_delete and not args.once:
        raise InputError(
            "run: --confirm-delete goes with --once; a running daemon takes the websocket "
            'request {"op": "confirm_delete"}'
        )
    if not args.once:
        return asyncio.run(daemon.run())
    daemon.confirm_deletes = args.confirm_delete
    code = asyncio.run(daemon.run_once())
    if daemon.last_sync is not None:
        print(f"run --once: {daemon.last_sync.summary()}")
        counters = daemon.engine.extraction_counters if daemon.engine is not None else None
        passes = counters.sequences if counters is not None else 0
        print(f"run --once: {passes} texts through the model")
    if daemon.generation is not None:
        print(f"published generation {daemon.generation} -> {_current_dir(config)}")
    else:
        print("run --once: nothing new to publish")
    if daemon.held is not None:
        raise AmygdalaError(daemon.held.message("rerun with --confirm-delete to apply it"))
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from amygdala_daemon.views.status import format_status, status_report

    report = status_report(config_from_args(args))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from amygdala_daemon.views.probe import format_probe, probe_texts

    if not args.tokens and (args.layer is not None or args.plots):
        raise InputError("probe: --layer and --plots go with --tokens")
    if args.file:
        path = Path(args.file)
        try:
            raw = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"probe: cannot read {args.file}: {exc.strerror}") from None
        texts = [line for line in raw.splitlines() if line.strip()]
    elif args.text:
        texts = [" ".join(args.text)]
    elif not sys.stdin.isatty():
        texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    else:
        raise InputError("probe: give TEXT, or --file F (one text per line; - or a pipe: stdin)")
    if args.tokens:
        from amygdala_daemon.cli.quality import probe_tokens_command

        return probe_tokens_command(args, texts)
    results = probe_texts(config_from_args(args), texts)
    print(json.dumps(results, indent=2) if args.json else format_probe(results, args.top))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from amygdala_daemon.store.generations import rollback
    from amygdala_daemon.store.lock import StateLock

    config = config_from_args(args)
    with StateLock(config.state_path):
        generation = rollback(
            StatePaths(config.state_path).published,
            args.generation,
            config.publish.vectors_path,
            config.publish.manifest_path,
        )
    print(f"current -> generation {generation}")
    return 0


def _current_dir(config: Config) -> Path:
    return StatePaths(config.state_path).current


def _current(config: Config) -> Manifest | None:
    from amygdala_daemon.store.generations import current_manifest

    return current_manifest(StatePaths(config.state_path).published)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amygdala-daemon",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", help="TOML config file (default: $AMYGDALA_CONFIG, else built-in defaults)"
    )
    parser.add_argument("--state-dir", help="state directory (overrides state_dir in the config)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order here is the order `--help` lists them in.
    _add_run(commands)
    _add_rebuild(commands)
    _add_publish(commands)
    _add_status(commands)
    _add_probe(commands)
    _add_rollback(commands)

    from amygdala_daemon.cli.seed import add_seed_commands

    add_seed_commands(commands)

    from amygdala_daemon.cli.quality import add_quality_commands

    add_quality_commands(commands)
    return parser


def _add_run(commands: Subcommands) -> None:
    run = commands.add_parser(
        "run",
        help="watch the graph and keep the vectors fresh (foreground, for systemd)",
        description="Poll the source, run new or changed nodes through the model once each, "
        "publish on the schedule, and serve status and events on a websocket. SIGTERM stops "
        "gracefully; SIGHUP reloads the config.",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="drain pending work, publish if anything changed, and exit",
    )
    run.add_argument(
        "--confirm-delete",
        action="store_true",
        help="with --once: apply a held mass delete (more than source.max_delete_fraction "
        "of the nodes, or an empty source); without it such a sync is held and exits 1",
    )
    run.set_defaults(func=cmd_run)


def _add_rebuild(commands: Subcommands) -> None:
    rebuild = commands.add_parser(
        "rebuild",
        help="recompute everything from the source, then publish",
        description="Forget the ledger, run every node through the model, refold and publish. "
        "Concept rows may be renumbered.",
    )
    rebuild.add_argument(
        "--from-cache",
        action="store_true",
        help="refold the stored activations under the current label settings; no model needed",
    )
    add_distributed_flags(rebuild)
    rebuild.set_defaults(func=cmd_rebuild)


def _add_publish(commands: Subcommands) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish a new generation now",
        description="Write a new generation if the ledger or settings changed since the last one.",
    )
    publish.add_argument("--force", action="store_true", help="publish even if nothing changed")
    publish.set_defaults(func=cmd_publish)


def _add_status(commands: Subcommands) -> None:
    status = commands.add_parser(
        "status",
        help="counts per concept, backlog, last generation, quarantined nodes",
        description="Read-only: safe while the daemon runs.",
    )
    status.add_argument("--json", action="store_true", help="one JSON object (stable field names)")
    status.set_defaults(func=cmd_status)


def _add_probe(commands: Subcommands) -> None:
    probe = commands.add_parser(
        "probe",
        help="project text onto the current vectors",
        description="Run text through the model and project it onto every published concept at "
        "every layer: raw dot products, and z-scores against the negatives' calibration.",
    )
    probe.add_argument(
        "text", nargs="*", help="the text to probe (none: one text per line from stdin)"
    )
    probe.add_argument("--file", help="a file with one text per line (- for stdin)")
    probe.add_argument("--json", action="store_true", help="a JSON list, one object per text")
    probe.add_argument("--top", type=int, default=5, help="concepts shown per text (default 5)")
    probe.add_argument(
        "--tokens",
        action="store_true",
        help="per token: the top concepts' raw and z projections at every layer (every token, "
        "position 0 and attention sinks included and flagged)",
    )
    probe.add_argument(
        "--layer",
        type=int,
        help="with --tokens: the layer the table and plots show (default: each concept's best "
        "held-out layer)",
    )
    probe.add_argument(
        "--plots",
        metavar="DIR",
        help="with --tokens: write DIR/tokens_<n>.png per text, tokens coloured by z (needs "
        "matplotlib)",
    )
    probe.set_defaults(func=cmd_probe)


def _add_rollback(commands: Subcommands) -> None:
    rollback = commands.add_parser(
        "rollback",
        help="point `current` back to an earlier generation",
        description="Without GEN, go back one generation. The next publish writes a new one.",
    )
    rollback.add_argument("generation", nargs="?", type=int, metavar="GEN")
    rollback.set_defaults(func=cmd_rollback)


def main(argv: Sequence[str] | None = None) -> int:
    return quiet_on_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # No token reaches a log line, at any level, also from `publish` as a client.
    from amygdala_daemon.serving.logfilters import install

    install()
    # transformers is chatty at INFO and warns about things that are fine here.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # APScheduler logs every job run at INFO: an idle daemon would log twice a minute.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        # The config is read and checked before a command imports torch or transformers.
        config_from_args(args)
        code: int = args.func(args)
        return code
    except AmygdalaError as exc:
        print(f"amygdala-daemon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            raise
        # The disk refused something no layer below named (a read-only or full state
        # directory): a state problem, one line; -v keeps the traceback for a bug.
        log.debug("the operating system refused", exc_info=True)
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"amygdala-daemon: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
