"""A full rebuild interrupted at any instant leaves the old state whole, and a later one works."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.reader import load_readout
from amygdala_daemon.store.config_file import load
from amygdala_daemon.store.ledger import Ledger
from amygdala_daemon.store.recovery import recover_fold, stored_model_info
from tests.helpers.cli import run_cli as cli
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl


def snapshot(config: Config, config_path: Path) -> tuple[dict[str, Any], Accumulators, int]:
    """What must survive an interrupted rebuild: status, the fold, and a loadable `current`."""
    status = json.loads(cli(config_path, "status", "--json").stdout)
    ledger = Ledger(StatePaths(config.state_path).ledger, readonly=True)
    try:
        info = stored_model_info(ledger)
        assert info is not None
        fold = recover_fold(ledger, config, (len(info.layers), info.hidden_size))
    finally:
        ledger.close()
    readout = load_readout(StatePaths(config.state_path).current)
    assert readout.generation is not None
    return status, fold, readout.generation


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def extraction_seconds(log: str) -> float:
    """From the "extracting" log line to the "published" one, by their timestamps."""
    stamps = {}
    for line in log.splitlines():
        for word in ("extracting", "published /"):
            if word in line:
                stamps[word] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps["published /"] - stamps["extracting"]).total_seconds()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_interrupting_rebuild_at_random_instants_keeps_the_old_state(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # Four copies of the sample graph under other ids: a few seconds of extraction to hit.
    nodes = [{**n, "id": f"{n['id']}-{copy}"} for copy in range(4) for n in sample_nodes()]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config_path = tmp_path / "config.toml"
    table = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "jsonl", "path": str(graph)},
        # batch_size 1: small chunks of work, so an interrupt can land between commits.
        "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu", "batch_size": 1},
    }
    config_path.write_text(config_toml(table))
    config = load(config_path)
    assert cli(config_path, "rebuild").returncode == 0
    status, fold, generation = snapshot(config, config_path)
    baseline = cli(config_path, "rebuild")
    assert baseline.returncode == 0
    duration = extraction_seconds(baseline.stderr)
    status, fold, generation = snapshot(config, config_path)

    rng = random.Random(7)
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 4
    pending, interrupted, window = list(signals), 0, duration
    # A rebuild that finishes before its signal (it ran faster than the baseline: the machine's
    # load changed) is run again with the same signal, sent sooner.
    for _ in range(3 * len(signals)):
        if not pending:
            break
        signum = pending[0]
        process = subprocess.Popen(
            [sys.executable, "-m", "amygdala_daemon", "--config", str(config_path), "rebuild"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            # A shell without job control starts background jobs with SIGINT ignored, and
            # Python keeps an ignored SIGINT ignored: give the rebuild the terminal's default.
            preexec_fn=default_sigint,
        )
        # Interrupt once the rebuild is under way (the model loaded, nodes being extracted):
        # before that, the interpreter is still starting and SIGTERM's default applies.
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "extracting" in line:
                break
        time.sleep(rng.uniform(0.0, window))
        process.send_signal(signum)
        _, rest = process.communicate(timeout=120)
        stderr = "".join(seen) + rest
        if process.returncode == 0 or "published /" in stderr:
            # It finished first: the new state is the one to keep from now on.
            status, fold, generation = snapshot(config, config_path)
            window *= 0.7
            continue
        pending.pop(0)
        interrupted += 1
        if signum != signal.SIGKILL:
            assert process.returncode == 130, stderr
            lines = [line for line in stderr.splitlines() if "interrupted" in line]
            assert len(lines) == 1 and "Traceback" not in stderr, stderr
        now_status, now_fold, now_generation = snapshot(config, config_path)
        if "the new ledger is in place" in stderr:
            # Interrupted after the swap: the ledger is the new one, `current` the old.
            status, fold = now_status, now_fold
        assert now_generation == generation
        assert now_status["nodes"] == status["nodes"]
        assert now_status["concepts"] == status["concepts"]
        assert_same_fold(now_fold, fold, rtol=1e-12)
        assert not StatePaths(config.state_path).staged_ledger.exists() or signum == signal.SIGKILL
    assert interrupted >= 10, f"only {interrupted} of {len(signals)} rebuilds were interrupted"

    # A later rebuild completes and equals a rebuild in a fresh state directory.
    done = cli(config_path, "rebuild")
    assert done.returncode == 0, done.stderr
    _, after, _ = snapshot(config, config_path)
    fresh_path = tmp_path / "fresh.toml"
    fresh_path.write_text(config_toml({**table, "state_dir": str(tmp_path / "fresh")}))
    assert cli(fresh_path, "rebuild").returncode == 0
    _, fresh, _ = snapshot(load(fresh_path), fresh_path)
    assert_same_fold(after, fresh)
