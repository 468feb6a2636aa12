"""The mass-delete guard and kept activations, through `run --once` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.store.ledger import Ledger
from tests.helpers.cli import one_error_line
from tests.helpers.cli import run_cli as cli
from tests.helpers.graphs import config_toml, edited, sample_nodes, write_jsonl

FIELDS = ("generation", "ledger_seq", "nodes", "concepts")


def write_config(tmp_path: Path, model_dir: Path, layers: list[int], **source: Any) -> Path:
    table = {
        "state_dir": str(tmp_path / "state"),
        "source": {"kind": "jsonl", "path": str(tmp_path / "graph.jsonl"), **source},
        "model": {"name": str(model_dir), "layers": layers, "device": "cpu", "batch_size": 1},
    }
    path = tmp_path / "config.toml"
    path.write_text(config_toml(table))
    return path


def status(config: Path) -> dict[str, Any]:
    result = cli(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def forward_passes(result: subprocess.CompletedProcess[str]) -> int:
    """The count `run --once` prints of texts it ran through the model."""
    line = next(x for x in result.stdout.splitlines() if x.endswith("texts through the model"))
    return int(line.split()[2])


def live_entries(tmp_path: Path) -> int:
    """Nodes whose activations the ledger holds now."""
    ledger = Ledger(StatePaths(tmp_path / "state").ledger, readonly=True)
    try:
        return ledger.live_count()
    finally:
        ledger.close()


def current(tmp_path: Path) -> tuple[str, dict[str, np.ndarray]]:
    published = tmp_path / "state" / "published" / "current"
    manifest = (published / "manifest.json").read_text()
    return manifest, load_file(str(published / "vectors.safetensors"))


def test_a_mass_delete_waits_for_confirmation_and_a_swap_back_costs_no_forward_pass(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:80]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = write_config(tmp_path, tiny_model_dir, [1, 2])
    first = cli(config, "run", "--once")
    assert first.returncode == 0, first.stderr
    assert forward_passes(first) > 60
    before = status(config)
    before_current = current(tmp_path)
    assert before["held"] is None and before["nodes"]["applied"] > 60

    # An empty file and a file that lost 90% of its lines: held, nothing lost.
    for shown in ([], nodes[:8]):
        write_jsonl(graph, shown)
        held = cli(config, "run", "--once")
        assert held.returncode == 1, held.stdout + held.stderr
        error = one_error_line(held)
        assert "mass delete held" in error and "--confirm-delete" in error
        assert f"delete {80 - len(shown)} of 80 nodes" in error
        after = status(config)
        assert {k: after[k] for k in FIELDS} == {k: before[k] for k in FIELDS}
        assert after["held"]["deletes"] == 80 - len(shown)
        assert after["held"]["source_empty"] is (not shown)
        assert "confirm_delete" in after["held"]["confirm"]
        text = cli(config, "status")
        assert "held:        mass delete of" in text.stdout
        assert current(tmp_path)[0] == before_current[0]

    # Confirmed: the deletes apply.
    confirmed = cli(config, "run", "--once", "--confirm-delete")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "72 deleted" in confirmed.stdout
    shrunk = status(config)
    kept = forward_passes(first) - live_entries(tmp_path)
    assert shrunk["held"] is None
    assert shrunk["nodes"]["applied"] < before["nodes"]["applied"]
    assert shrunk["ledger_seq"] > before["ledger_seq"]

    # Swapped back: every node returns from kept activations, and the fold is as before.
    write_jsonl(graph, nodes)
    back = cli(config, "run", "--once")
    assert back.returncode == 0, back.stderr
    assert forward_passes(back) == 0
    # Of the 72 returning nodes, those without activations (ineligible) needed no model anyway.
    assert f"{kept} from kept activations" in back.stdout and kept > 60
    restored = status(config)
    assert restored["nodes"] == before["nodes"]
    assert restored["concepts"] == before["concepts"]
    manifest, vectors = current(tmp_path)
    assert json.loads(manifest)["generation"] > json.loads(before_current[0])["generation"]
    for key, tensor in before_current[1].items():
        np.testing.assert_allclose(vectors[key], tensor, rtol=0, atol=1e-5, err_msg=key)

    # An edit undone costs no forward pass either.
    changed = [edited(nodes[0], "Then it rained."), *nodes[1:]]
    write_jsonl(graph, changed)
    assert forward_passes(cli(config, "run", "--once")) == 1
    write_jsonl(graph, nodes)
    undone = cli(config, "run", "--once")
    assert forward_passes(undone) == 0 and "1 from kept activations" in undone.stdout
    assert status(config)["concepts"] == before["concepts"]


def test_kept_activations_never_outlive_a_model_change(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    nodes = sample_nodes()[:40]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = write_config(tmp_path, tiny_model_dir, [1, 2])
    first = cli(config, "run", "--once")
    assert first.returncode == 0
    write_jsonl(graph, nodes[:20])
    assert cli(config, "run", "--once", "--confirm-delete").returncode == 0
    # Other layers: the rebuild starts a new ledger, so the kept rows go with the old one.
    config = write_config(tmp_path, tiny_model_dir, [1])
    rebuilt = cli(config, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    returning = forward_passes(first) - live_entries(tmp_path)
    write_jsonl(graph, nodes)
    back = cli(config, "run", "--once")
    assert back.returncode == 0, back.stderr
    assert forward_passes(back) == returning > 10 and "0 from kept activations" in back.stdout


def test_the_fraction_is_configurable_and_checked(tmp_path: Path, tiny_model_dir: Path) -> None:
    nodes = sample_nodes()[:20]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = write_config(tmp_path, tiny_model_dir, [1, 2], max_delete_fraction=1.0)
    assert cli(config, "run", "--once").returncode == 0
    # 1.0 lets any share through, but an empty source still waits for a yes.
    write_jsonl(graph, nodes[:1])
    assert cli(config, "run", "--once").returncode == 0
    write_jsonl(graph, [])
    held = cli(config, "run", "--once")
    assert held.returncode == 1 and "the source reads as empty" in one_error_line(held)
    assert status(config)["nodes"]["applied"] + status(config)["nodes"]["ineligible"] >= 1

    for bad in (0, 1.5):
        config = write_config(tmp_path, tiny_model_dir, [1, 2], max_delete_fraction=bad)
        refused = cli(config, "run", "--once")
        assert refused.returncode == 2
        assert "source.max_delete_fraction" in one_error_line(refused)
    assert (
        cli(write_config(tmp_path, tiny_model_dir, [1, 2]), "run", "--confirm-delete").returncode
        == 2
    )
