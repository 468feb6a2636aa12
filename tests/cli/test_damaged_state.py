"""A damaged state directory, as the command line meets it: one line, and nothing deleted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import one_error_line
from tests.helpers.published import published_state


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    path, _ = published_state(tmp_path_factory.mktemp("published"), tiny_model_dir)
    return path


@pytest.fixture
def state(published: Path, tmp_path: Path) -> Path:
    """A copy of the published state directory, this test's own to damage."""
    return Path(shutil.copytree(published.parent / "state", tmp_path / "state"))


def cli(config: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--config", str(config), "--state-dir", str(state)]
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *flags, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["publish"], ["report"]])
def test_a_ledger_that_is_not_a_database_is_one_line_and_kept(
    published: Path, state: Path, command: list[str]
) -> None:
    ledger = state / "ledger.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    ledger.write_bytes(b"this is not a SQLite database, whatever its name says\n" * 40)
    result = cli(published, state, *command)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert f"{ledger} is not a valid ledger (file is not a database)" in line
    assert line.endswith("move it aside and run `amygdala-daemon rebuild`")
    assert ledger.read_bytes().startswith(b"this is not a SQLite database")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_checkpoint_is_said_once_and_refolded(
    published: Path, state: Path, damage: str
) -> None:
    checkpoint = state / "accumulators.npz"
    whole = cli(published, state, "status", "--json")
    assert whole.returncode == 0, whole.stderr
    assert "checkpoint" not in whole.stderr
    kept = checkpoint.read_bytes()
    checkpoint.write_bytes(b"not an npz" if damage == "garbage" else kept[: len(kept) // 2])
    result = cli(published, state, "status", "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "checkpoint" in line]
    assert len(warnings) == 1, result.stderr
    assert f"{checkpoint} is not a readable checkpoint" in warnings[0]
    assert warnings[0].endswith("refolding from the ledger")
    # The refold gives what the checkpoint held.
    assert result.stdout == whole.stdout
