"""`run --once` and `status` count the same state the same way.

A node stored with activations but too short for the statistics (labels.min_content_chars)
is ineligible in both: applied means in the fold.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.labels import is_eligible
from amygdala_daemon.core.tags import parse_text
from tests.helpers.graphs import config_toml, sample_nodes

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_run_once_and_status_give_one_set_of_counts(
    tmp_path: Path, graph_path: Path, tiny_model_dir: Path
) -> None:
    short = [
        node
        for node in sample_nodes()
        if (parsed := parse_text(node["text"], {})).tags
        and parsed.content
        and not is_eligible(parsed.tags, parsed.content, LabelsConfig())
    ]
    assert short, "the sample holds tagged nodes too short for the statistics"
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            {
                "state_dir": str(tmp_path / "state"),
                "source": {"kind": "jsonl", "path": str(graph_path)},
                "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
            }
        )
    )
    summary = re.search(
        r"run --once: (\d+) applied, (\d+) quarantined, (\d+) ineligible",
        cli(config, "run", "--once"),
    )
    assert summary is not None
    applied, quarantined, ineligible = map(int, summary.groups())
    nodes = json.loads(cli(config, "status", "--json"))["nodes"]
    assert (applied, quarantined, ineligible) == (
        nodes["applied"],
        nodes["quarantined"],
        nodes["ineligible"],
    )
    assert applied + quarantined + ineligible == len(sample_nodes())
    assert ineligible >= len(short)
