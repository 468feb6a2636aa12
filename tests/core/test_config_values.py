"""Config values that parse but cannot be meant: refused on the real command line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import one_error_line
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[labels]\nmax_negative_score = 8\n",
            "config: labels.max_negative_score: 8.0 must be below labels.min_positive_score (8.0)",
        ),
        (
            "[labels]\nmin_positive_score = 6\nmax_negative_score = 7.5\n",
            "config: labels.max_negative_score: 7.5 must be below labels.min_positive_score (6.0)",
        ),
        (
            "[model]\nsink_norm_ratio = nan\n",
            "config: model.sink_norm_ratio: nan is not a finite number",
        ),
        (
            "[daemon]\npoll_interval = inf\n",
            "config: daemon.poll_interval: inf is not a finite number",
        ),
        (
            "[labels]\nmax_negative_score = -nan\n",
            "config: labels.max_negative_score: nan is not a finite number",
        ),
        (
            "[vectors]\nevaluate_every = inf\n",
            "config: vectors.evaluate_every: inf is not a finite number",
        ),
        ("[model]\nlayers = [1, 1, 2]\n", "config: model.layers: layer 1 is listed twice"),
        ("[model]\nlayers = [2, -1, 2]\n", "config: model.layers: layer 2 is listed twice"),
    ],
)
def test_values_that_cannot_be_meant_are_one_line_and_exit_2(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n{toml}')
    result = cli("--config", str(path), "status")
    assert result.returncode == 2, result.stdout
    assert expected in one_error_line(result)
    assert not (tmp_path / "state").exists(), "nothing was touched"


def test_a_negative_ceiling_below_the_positive_floor_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[labels]\nmin_positive_score = 8\n'
        "max_negative_score = 7.9\n[model]\nlayers = [1, -1]\n"
    )
    result = cli("--config", str(path), "status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["generation"] is None


# Three CLI subprocesses, two of them loading torch and the tiny model.
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_included_concept_no_node_carries_is_warned_of_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    graph = write_jsonl(tmp_path / "graph.jsonl", sample_nodes())
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            {
                "state_dir": str(tmp_path / "state"),
                "source": {"kind": "jsonl", "path": str(graph)},
                "model": {"name": str(tiny_model_dir), "layers": [1, 2], "threads": 1},
                "concepts": {"include": ["joy", "Calm", "jyo"]},
            }
        )
    )
    first = cli("--config", str(config), "run", "--once")
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 2, first.stderr
    assert "concepts.include names 'Calm'" in warnings[0]
    assert "concepts.include names 'jyo'" in warnings[1]
    manifest = json.loads((tmp_path / "state/published/current/manifest.json").read_text())
    assert manifest["concepts"] == ["joy"]
    assert "no node carries it" in manifest["unpublished"]["jyo"]

    status = json.loads(cli("--config", str(config), "status", "--json").stdout)
    assert [w for w in status["warnings"] if "'jyo'" in w and "no node carries" in w]

    again = cli("--config", str(config), "publish", "--force")
    assert again.returncode == 0, again.stderr
    assert "concepts.include" not in again.stderr, "warned of once, not at every publish"
