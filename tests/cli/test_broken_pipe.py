"""A reader that stops reading (`| head -1`): every command ends quietly, with exit code 141."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.cli.common import BROKEN_PIPE_EXIT
from tests.helpers.published import published_state


@pytest.fixture(scope="module")
def published_config(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    path, _ = published_state(tmp_path_factory.mktemp("published"), tiny_model_dir)
    return path


def into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose read end is closed before it writes a byte.

    Closed first rather than after one line: a short output could otherwise fit in the pipe
    before the reader lets go, and the command would never meet the broken pipe.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "amygdala_daemon", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "command",
    [["report"], ["report", "--json"], ["status"], ["status", "--json"]],
    ids=" ".join,
)
def test_a_closed_stdout_ends_quietly(published_config: Path, command: list[str]) -> None:
    result = into_closed_pipe("--config", str(published_config), *command)
    assert result.returncode == BROKEN_PIPE_EXIT, result.stderr
    assert result.stderr == ""
