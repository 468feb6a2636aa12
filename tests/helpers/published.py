"""A published generation on the tiny model, for the tests of the read-only views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amygdala_daemon.cli.main import main as cli_main
from amygdala_daemon.core.config import Config
from amygdala_daemon.store.config_file import load
from tests.helpers.graphs import config_toml, sample_nodes, write_jsonl


def published_state(directory: Path, model_dir: Path) -> tuple[Path, Config]:
    """A config file on the bundled sample graph and the tiny model, after `rebuild`."""
    graph = write_jsonl(directory / "graph.jsonl", sample_nodes())
    table: dict[str, Any] = {
        "state_dir": str(directory / "state"),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(model_dir), "layers": [1, 2], "device": "cpu", "threads": 1},
    }
    path = directory / "config.toml"
    path.write_text(config_toml(table), encoding="utf-8")
    assert cli_main(["--config", str(path), "rebuild"]) == 0
    return path, load(path)
