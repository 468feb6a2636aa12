"""The README's exit code table, held to what the commands return."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amygdala_daemon.store.lock import StateLock
from tests.helpers import ROOT
from tests.helpers.cli import one_error_line


def exit_code_table() -> dict[int, str]:
    """`| code | meaning |` rows of the README's "Exit codes" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.MULTILINE)
    return {int(code): meaning for code, meaning in rows}


def cli(state: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    chosen = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *chosen, "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_the_table_has_every_code_main_returns() -> None:
    assert set(exit_code_table()) == {0, 1, 2, 130, 141}


def test_a_held_writer_lock_is_1(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state):
        result = cli(state, "rollback")
    assert result.returncode == 1
    assert "writer lock" in exit_code_table()[1]
    assert str(os.getpid()) in one_error_line(result)


def test_nothing_published_is_1(tmp_path: Path) -> None:
    result = cli(tmp_path / "state", "probe", "a text")
    assert result.returncode == 1
    assert "nothing published" in exit_code_table()[1]
    assert "no published generation" in one_error_line(result)


@pytest.mark.parametrize("flags", [["status", "--no-such-flag"], ["rollback", "not-a-number"]])
def test_a_bad_flag_is_2(tmp_path: Path, flags: list[str]) -> None:
    result = cli(tmp_path / "state", *flags)
    assert result.returncode == 2
    assert "a flag" in exit_code_table()[2]
    # argparse's own form: a usage line, then `amygdala-daemon [COMMAND]: error: ...`.
    assert "error: " in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_a_bad_config_is_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[publish]\ninterval = 'a b c d e'\n")
    result = cli(tmp_path / "state", "status", config=config)
    assert result.returncode == 2
    assert "a config value" in exit_code_table()[2]
    assert "config: publish.interval:" in one_error_line(result)


def test_success_is_0(tmp_path: Path) -> None:
    result = cli(tmp_path / "state", "status", "--json")
    assert result.returncode == 0, result.stderr
    assert exit_code_table()[0] == "success"
