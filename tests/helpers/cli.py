"""What the command line's errors look like to a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("amygdala-daemon: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def run_cli(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`amygdala-daemon --config CONFIG ARGS...` as a user runs it: a real subprocess, no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
