"""Memory graphs and configs for tests: the bundled sample, JSONL files, TOML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amygdala_daemon.core.config import Config, from_dict
from amygdala_daemon.sources import bundled_sample_path


def sample_nodes() -> list[dict[str, Any]]:
    """The bundled sample graph as dicts."""
    return [json.loads(line) for line in bundled_sample_path().read_text().splitlines()]


def write_jsonl(path: Path, nodes: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(n) + "\n" for n in nodes), encoding="utf-8")
    return path


def edited(node: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The node with `suffix` added to its content, its tag line kept last."""
    content, _, tags = node["text"].rpartition("\n")
    return {**node, "text": f"{content} {suffix}\n{tags}"}


def make_config(
    state_dir: Path, graph: Path, model_dir: Path, **sections: dict[str, Any]
) -> Config:
    table: dict[str, Any] = {
        "state_dir": str(state_dir),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(model_dir), "layers": [1, 2], "device": "cpu"},
    }
    for section, values in sections.items():
        table.setdefault(section, {}).update(values)
    return from_dict(table)


def config_toml(config_table: dict[str, Any]) -> str:
    """Render a small nested dict as TOML (strings, numbers, lists, one level of tables)."""
    top = []
    tables = []
    for key, value in config_table.items():
        if isinstance(value, dict):
            body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            tables.append(f"[{key}]\n{body}\n")
        else:
            top.append(f"{key} = {json.dumps(value)}")
    return "\n".join(top) + "\n\n" + "\n".join(tables)
