"""The mcp source's tool mapping: which tools to call, and where the nodes are in their answers.

Pure functions over the `[source]` keys and strings. The config's validation builds a mapping
to check it; the mcp source (`sources/mcp.py`) builds one, and `sources/mcp_mapping.py` reads
the graph through it.
"""

from __future__ import annotations

import json
from dataclasses import Field, dataclass, fields, replace
from typing import Any, ClassVar, Protocol, TypeVar

# The reference server's version the preset was tested with (tests/npm/package.json).
KNOWLEDGE_GRAPH_PACKAGE = "@modelcontextprotocol/server-memory@2026.8.31"

# Mapping keys a preset fills in, where the config leaves them at their defaults; keyed by
# the names `config.Preset` accepts (a test keeps the two the same).
PRESETS: dict[str, dict[str, Any]] = {
    "knowledge-graph": {
        # read_graph answers {"entities": [{name, entityType, observations: [...]}], ...}.
        "list_tool": "read_graph",
        "result_path": "entities",
        "id_field": "name",
        "text_field": "observations",
        "kind_field": "entityType",
        "updated_at_field": "",
        "command": ["npx", "-y", KNOWLEDGE_GRAPH_PACKAGE],
    },
}


class MappingError(Exception):
    """A tool's answer does not fit the mapping, or the mapping itself is bad (one line).

    `key` names the config key at fault, when it is the config's fault.
    """

    def __init__(self, problem: str, key: str = "") -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class SourceKeys(Protocol):
    """The `[source]` keys a tool mapping is made of; `config.SourceConfig` has them all.

    A protocol, not `SourceConfig` itself: the config's validation calls this module, so this
    module cannot import the config.
    """

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    url: str
    command: list[str]
    list_tool: str
    list_args: str
    get_tool: str
    get_args: str
    changes_tool: str
    changes_args: str
    cursor_path: str
    result_path: str
    id_field: str
    text_field: str
    kind_field: str
    updated_at_field: str
    deleted_field: str
    text_join: str

    @property
    def preset(self) -> str: ...


Keys = TypeVar("Keys", bound=SourceKeys)


@dataclass(frozen=True)
class ToolMapping:
    """Which tools to call, and where the nodes are in their answers."""

    list_tool: str
    list_args: dict[str, Any]
    get_tool: str
    get_args: dict[str, Any]
    changes_tool: str
    changes_args: dict[str, Any]
    cursor_path: str
    result_path: str
    id_field: str
    text_field: str
    kind_field: str
    updated_at_field: str
    deleted_field: str
    text_join: str

    def tools(self) -> list[str]:
        return [t for t in (self.list_tool, self.get_tool, self.changes_tool) if t]


def effective(config: Keys) -> Keys:
    """The config with its preset's values wherever a key was left at its default.

    A preset's command is only used when neither a url nor a command is given.
    """
    preset = dict(PRESETS.get(config.preset, {}))
    if config.url:
        preset.pop("command", None)
    defaults = type(config)()  # every key at its default
    changes = {
        f.name: preset[f.name]
        for f in fields(config)
        if f.name in preset and getattr(config, f.name) == getattr(defaults, f.name)
    }
    return replace(config, **changes)


def parse_args(key: str, text: str) -> dict[str, Any]:
    """A tool-arguments key: a JSON object, as a string."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise MappingError(f"not valid JSON ({exc.msg}): {text!r}", f"source.{key}") from None
    if not isinstance(value, dict):
        raise MappingError(f"expected a JSON object, got {text!r}", f"source.{key}")
    return value


def tool_mapping(config: SourceKeys) -> ToolMapping:
    """Build the mapping from a config whose preset is already applied (`effective`)."""
    if not config.list_tool:
        raise MappingError("the mcp source needs a tool that lists the nodes", "source.list_tool")
    if config.changes_tool and not config.cursor_path:
        raise MappingError("a changes_tool needs the path of its cursor", "source.cursor_path")
    return ToolMapping(
        list_tool=config.list_tool,
        list_args=parse_args("list_args", config.list_args),
        get_tool=config.get_tool,
        get_args=parse_args("get_args", config.get_args),
        changes_tool=config.changes_tool,
        changes_args=parse_args("changes_args", config.changes_args),
        cursor_path=config.cursor_path,
        result_path=config.result_path,
        id_field=config.id_field,
        text_field=config.text_field,
        kind_field=config.kind_field,
        updated_at_field=config.updated_at_field,
        deleted_field=config.deleted_field,
        text_join=config.text_join,
    )
