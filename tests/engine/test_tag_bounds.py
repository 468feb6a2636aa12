"""A node that names thousands of concepts costs a bounded amount, and is forgotten when gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.tags import MAX_TAGS
from tests.helpers.cli import run_cli as cli
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl


def tracked(state: Path) -> list[str]:
    """The concepts the checkpointed fold tracks."""
    import numpy as np

    with np.load(StatePaths(state).checkpoint, allow_pickle=False) as data:
        concepts: list[str] = json.loads(str(data["meta"]))["concepts"]
    return concepts


@pytest.mark.slow
def test_ten_thousand_tag_names_are_capped_and_forgotten_with_their_node(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:80]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        config_toml(
            {
                "state_dir": str(state),
                "source": {"kind": "jsonl", "path": str(graph)},
                "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
            }
        )
    )
    assert cli(config, "run", "--once").returncode == 0
    before = tracked(state)
    size_before = StatePaths(state).checkpoint.stat().st_size

    names = " ".join(f"made-up-name-{i}:9" for i in range(10_000))
    flood = {"id": "flood", "text": f"A day with far too many feelings in one entry.\n{names}"}
    write_jsonl(graph, [*nodes, flood])
    done = cli(config, "run", "--once")
    assert done.returncode == 0, done.stderr
    grown = tracked(state)
    assert len(grown) - len(before) == MAX_TAGS
    # The checkpoint grows by what MAX_TAGS concepts cost, not by 10,000 concepts.
    per_concept = (StatePaths(state).checkpoint.stat().st_size - size_before) / MAX_TAGS
    assert per_concept < 5 * size_before / max(len(before), 1)

    write_jsonl(graph, [*nodes, {"id": "flood", "deleted": True}])
    assert cli(config, "run", "--once").returncode == 0
    assert tracked(state) == before
    status = json.loads(cli(config, "status", "--json").stdout)
    assert not [c for c in status["concepts"] if c["name"].startswith("made-up-name-")]


@pytest.mark.slow
def test_a_node_that_would_pass_concepts_max_tracked_is_quarantined(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:80]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    table = {
        "state_dir": str(state),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(tiny_model_dir), "layers": [1, 2], "device": "cpu"},
    }
    config.write_text(config_toml(table))
    assert cli(config, "run", "--once").returncode == 0
    before = tracked(state)
    table["concepts"] = {"max_tracked": len(before) + 5}
    config.write_text(config_toml(table))
    six = " ".join(f"extra{i}:9" for i in range(6))
    five = " ".join(f"other{i}:9" for i in range(5))
    text = "Another long enough entry about the week and how it went.\n"
    write_jsonl(
        graph,
        [*nodes, {"id": "six", "text": text + six}, {"id": "five", "text": text + five}],
    )
    done = cli(config, "run", "--once")
    assert done.returncode == 0, done.stderr
    assert sorted(tracked(state)) == sorted([*before, *(f"other{i}" for i in range(5))])
    status = json.loads(cli(config, "status", "--json").stdout)
    assert status["nodes"]["quarantined"] == 1
    # The refused node stays refused on the next poll: it is not run through the model again.
    again = cli(config, "run", "--once")
    assert again.returncode == 0 and "0 applied, 0 quarantined" in again.stdout
