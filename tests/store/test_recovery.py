"""Recovery: a checkpoint is reused only for the ledger that it folds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.fold import Accumulators
from amygdala_daemon.core.stats import Welford
from amygdala_daemon.store.checkpoint import load_checkpoint, save_checkpoint
from amygdala_daemon.store.ledger import Ledger
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.generations import check_generation
from tests.helpers.graphs import sample_nodes, write_jsonl


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def published_rows(state: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The current manifest, and each concept's vectors `[n_layers, hidden]` by name."""
    current = state / "published" / "current"
    manifest = check_generation(current)
    tensors = load_file(str(current / "vectors.safetensors"))
    rows = {
        name: np.stack([tensors[f"layer_{layer}.vectors"][row] for layer in manifest["layers"]])
        for row, name in enumerate(manifest["concepts"])
    }
    return manifest, rows


def test_a_ledger_has_an_identity_that_reset_renews(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    first = ledger.ledger_id
    ledger.close()
    reopened = Ledger(path)
    try:
        assert reopened.ledger_id == first
        reopened.reset()
        # A reset ledger holds another history: no checkpoint of the old one may apply.
        assert reopened.ledger_id not in ("", first)
        reset_id = reopened.ledger_id
    finally:
        reopened.close()
    reader = Ledger(path, readonly=True)
    try:
        assert reader.ledger_id == reset_id
    finally:
        reader.close()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    fresh = Ledger(path)
    try:
        assert fresh.ledger_id not in ("", first, reset_id)
    finally:
        fresh.close()


def test_a_checkpoint_loads_only_for_the_ledger_it_was_stamped_with(tmp_path: Path) -> None:
    labels, shape = LabelsConfig(), (2, 3)
    fold = Accumulators(shape, labels, 7)
    fold.total = Welford(1, np.ones(shape), np.zeros(shape))
    path = tmp_path / "accumulators.npz"
    save_checkpoint(fold, path, ledger_id="ledger-a")

    loaded = load_checkpoint(path, labels, shape, ledger_id="ledger-a")
    assert loaded is not None and loaded.ledger_seq == 7 and loaded.total.count == 1
    assert load_checkpoint(path, labels, shape, ledger_id="ledger-b") is None

    save_checkpoint(fold, path)  # not stamped: it belongs to no ledger in particular
    assert load_checkpoint(path, labels, shape, ledger_id="ledger-a") is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_checkpoint_of_an_emptied_ledger_is_not_replayed_onto_the_new_one(
    tmp_path: Path, tiny_model_dir: Path, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        nodes[:80],
        daemon={"checkpoint_interval": 3600.0},
        # The daemon must not publish: the generation to check is the one recovery folds.
        publish={"interval": "1h", "publish_after_s": 0.0},
    )
    daemons.append(daemon)
    first = cli("--config", daemon.config, "run", "--once")
    assert first.returncode == 0, first.stderr
    checkpoint = daemon.state / "accumulators.npz"
    assert checkpoint.exists()

    ledger_path = daemon.state / "ledger.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        ledger_path.with_name(ledger_path.name + suffix).unlink(missing_ok=True)
    later = nodes[80:180]
    write_jsonl(daemon.graph, later)
    daemon.start()

    def ingested() -> bool:
        if not ledger_path.exists():
            return False
        reader = Ledger(ledger_path, readonly=True)
        try:
            return sum(reader.status_counts().values()) == len(later)
        except Exception:
            return False  # the daemon is still creating the schema
        finally:
            reader.close()

    wait_for(ingested, 300, "the daemon to ingest the new graph")
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait()
    # The old ledger's checkpoint is still there: the daemon never reached its next one.
    assert json.loads(str(np.load(checkpoint)["meta"]))["ledger_seq"] > 0

    recovered = cli("--config", daemon.config, "run", "--once")
    assert recovered.returncode == 0, recovered.stderr
    rebuilt_state = tmp_path / "rebuilt"
    rebuilt = cli("--config", daemon.config, "--state-dir", rebuilt_state, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr

    manifest, rows = published_rows(daemon.state)
    expected_manifest, expected_rows = published_rows(rebuilt_state)
    assert manifest["counts"] == expected_manifest["counts"]
    assert rows.keys() == expected_rows.keys() and rows
    for name, vectors in rows.items():
        np.testing.assert_allclose(vectors, expected_rows[name], rtol=0, atol=1e-5, err_msg=name)
