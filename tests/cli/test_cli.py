"""The command line as a user meets it: real subprocesses, real exit codes, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amygdala_daemon.cli.main import build_parser
from tests.helpers import ROOT
from tests.helpers.cli import one_error_line
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def write_config(path: Path, **table: object) -> Path:
    path.write_text(config_toml(table))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes())
    return write_config(
        tmp_path / "config.toml",
        state_dir=str(tmp_path / "state"),
        source={"kind": "jsonl", "path": str(graph)},
        model={"name": str(tiny_model_dir), "layers": [1, -2], "threads": 1},
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[model]\npooling = 'max'\n", "config: model.pooling: 'max' is not one of 'mean', 'last'"),
        (
            "[labels]\nmin_positive_score = 11\n",
            "config: labels.min_positive_score: 11.0 is above the maximum 10.0",
        ),
        (
            "[model]\nlayers = 'all'\n",
            "config: model.layers: expected a list of integers, got 'all'",
        ),
        ("[sauce]\nkind = 'jsonl'\n", "config: sauce: unknown key"),
        (
            "[source]\nkind = 'ftp'\n",
            "config: source.kind: 'ftp' is not one of 'jsonl', 'directory'",
        ),
        (
            "[publish]\ninterval = 'often'\n",
            "config: publish.interval: 'often' is neither a duration",
        ),
        (
            "[publish]\ninterval = '99999999999d'\n",
            "config: publish.interval: '99999999999d' is longer than the maximum 365d",
        ),
        (
            "[publish]\ninterval = 'a b c d e'\n",
            "config: publish.interval: 'a b c d e': Invalid month name",
        ),
        (
            "[server]\nhost = '0.0.0.0'\n",
            "config: server.token: binding '0.0.0.0' requires a token",
        ),
        ("state_dir = [\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = cli("--config", str(path), "status")
    assert result.returncode == 2
    assert expected in one_error_line(result)


def test_missing_config_file(tmp_path: Path) -> None:
    result = cli("--config", str(tmp_path / "nope.toml"), "status")
    assert result.returncode == 2
    assert "cannot read config file" in one_error_line(result)


# A dozen CLI subprocesses, each loading torch: about 40 s here.
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_rebuild_status_probe_and_bad_input_loses_nothing(
    tmp_path: Path, tiny_config: Path, tiny_model_dir: Path
) -> None:
    rebuilt = cli("--config", str(tiny_config), "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "published generation 1: 14 concepts" in rebuilt.stdout
    status = json.loads(cli("--config", str(tiny_config), "status", "--json").stdout)
    assert status["generation"] == 1 and status["backlog"] == 0
    assert status["ledger_seq"] > 0
    assert set(status["nodes"]) == {"applied", "quarantined", "ineligible"}
    assert status["nodes"]["applied"] > 300
    assert {c["name"] for c in status["concepts"] if c["published"]} >= {"joy", "warmth", "calm"}
    for concept in status["concepts"]:
        assert set(concept) >= {"name", "n_pos", "n_neg", "published"}

    probe = cli("--config", str(tiny_config), "probe", "--json", "We laughed all evening.")
    assert probe.returncode == 0, probe.stderr
    [result] = json.loads(probe.stdout)
    assert result["text"] == "We laughed all evening."
    assert set(result["projections"]["joy"]) == {"1", "2"}
    assert set(result["z"]["joy"]) == {"1", "2"}

    state = tmp_path / "state"
    before = (state / "ledger.sqlite3").read_bytes()
    bad_cases: dict[str, tuple[dict[str, object], str]] = {
        "missing-source.toml": (
            {"source": {"kind": "jsonl", "path": str(tmp_path / "missing.jsonl")}},
            "cannot read jsonl source",
        ),
        "missing-model.toml": (
            {"model": {"name": str(tmp_path / "no-such-model")}},
            "model.name: '" + str(tmp_path / "no-such-model") + "' does not exist",
        ),
        "deep-layer.toml": (
            {"model": {"name": str(tiny_model_dir), "layers": [1, 9]}},
            "model.layers: layer 9 is out of range for a model with 4 decoder blocks",
        ),
    }
    for name, (overrides, message) in bad_cases.items():
        table: dict[str, object] = {
            "state_dir": str(state),
            "source": {"kind": "jsonl", "path": str(tmp_path / "graph.jsonl")},
            "model": {"name": str(tiny_model_dir), "layers": [1, -2]},
        }
        table.update(overrides)
        result = cli("--config", str(write_config(tmp_path / name, **table)), "rebuild")
        assert result.returncode == 2, (name, result.stderr)
        assert message in one_error_line(result), name
    # Nothing was lost: the same generation, the same ledger.
    after = json.loads(cli("--config", str(tiny_config), "status", "--json").stdout)
    assert after["generation"] == 1 and after["nodes"] == status["nodes"]
    assert (state / "ledger.sqlite3").read_bytes() == before


@pytest.mark.slow
def test_publish_and_rollback_commands(tiny_config: Path) -> None:
    assert cli("--config", str(tiny_config), "rebuild").returncode == 0
    unchanged = cli("--config", str(tiny_config), "publish")
    assert "nothing changed" in unchanged.stdout
    assert cli("--config", str(tiny_config), "publish", "--force").returncode == 0
    back = cli("--config", str(tiny_config), "rollback")
    assert back.returncode == 0 and "generation 1" in back.stdout
    missing = cli("--config", str(tiny_config), "rollback", "7")
    assert missing.returncode == 2 and "generation 7 does not exist" in one_error_line(missing)


def test_every_subcommand_is_in_the_readme() -> None:
    help_text = cli("--help").stdout
    readme = (ROOT / "README.md").read_text()
    commands = next(
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert len(commands) >= 5
    for command, sub in commands.items():
        assert command in help_text, command
        assert f"amygdala-daemon {command}" in readme, f"README does not show {command}"
        assert sub.description, f"{command} --help explains itself"


def every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every_parser(sub)


def test_no_help_shows_a_doubled_percent_sign() -> None:
    # argparse %-formats argument help but prints descriptions and epilogs as written, so a
    # `%%` copied from one into the other shows up doubled.
    parsers = list(every_parser(build_parser()))
    assert len(parsers) > 5, "the walk reaches the subcommands"
    for parser in parsers:
        assert "%%" not in parser.format_help(), f"{parser.prog} --help shows '%%'"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\n```sh\n(.+?)\n```", readme, re.S)
    assert match is not None, "README marks its test command"
    assert match.group(1).strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_probe_reads_stdin_one_text_per_line(tiny_config: Path) -> None:
    assert cli("--config", str(tiny_config), "rebuild").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(tiny_config), "probe", "--json"],
        input="We laughed all evening.\n\nThe deadline scared me.\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    texts = [r["text"] for r in json.loads(result.stdout)]
    assert texts == ["We laughed all evening.", "The deadline scared me."]
