"""Memory sources: where the graph comes from. Each yields snapshots; none writes anything."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import assert_never

from amygdala_daemon.core.config import SourceConfig
from amygdala_daemon.sources.base import (
    Changes,
    ClosableSource,
    HintingSource,
    MemorySource,
    Rejected,
    Snapshot,
    SourceNode,
)
from amygdala_daemon.sources.errors import SourceError


def bundled_sample_path() -> Path:
    """The sample memory graph shipped inside the package."""
    return Path(str(resources.files("amygdala_daemon") / "data" / "sample_graph.jsonl"))


def open_source(config: SourceConfig) -> MemorySource:
    """Build the source the config names."""
    if config.kind == "jsonl":
        from amygdala_daemon.sources.jsonl import JsonlSource

        return JsonlSource(Path(config.path) if config.path else bundled_sample_path())
    if config.kind == "mcp":
        from amygdala_daemon.sources.mcp import McpSource

        return McpSource(config)
    if config.kind == "directory":
        from amygdala_daemon.sources.directory import DirectorySource

        if not config.path:
            raise SourceError("config: source.path: the directory source needs a path")
        return DirectorySource(Path(config.path), settle_s=config.settle_s)
    assert_never(config.kind)


__all__ = [
    "Changes",
    "ClosableSource",
    "HintingSource",
    "MemorySource",
    "Rejected",
    "Snapshot",
    "SourceError",
    "SourceNode",
    "bundled_sample_path",
    "open_source",
]
