"""How MCP tool answers become nodes: the reader that applies the tool mapping.

The mapping itself (which tools, which fields) is `core/tool_mapping`. The `mcp` source
(`sources/mcp.py`) does the talking, through the SDK; nothing here does I/O or knows the SDK.
The reader gets its tool calls through `ToolCalls`, and the rest is plain functions over the
mapping, JSON values and numbers, so each rule can be tested without a server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from amygdala_daemon.core.tool_mapping import MappingError, ToolMapping
from amygdala_daemon.sources.base import (
    Rejected,
    Snapshot,
    SourceNode,
    check_fields,
    lone_surrogate,
    not_unicode,
    storable_id,
)

log = logging.getLogger(__name__)


def fill(template: Any, values: dict[str, Any]) -> Any:
    """Put values into an argument template.

    A string that is exactly `{name}` becomes the value itself (a numeric cursor stays a
    number); `{name}` inside a longer string is replaced by its text.
    """
    if isinstance(template, dict):
        return {key: fill(item, values) for key, item in template.items()}
    if isinstance(template, list):
        return [fill(item, values) for item in template]
    if isinstance(template, str):
        for name, value in values.items():
            placeholder = "{" + name + "}"
            if template == placeholder:
                return value
            template = template.replace(placeholder, str(value))
    return template


def payload(tool: str, structured: Any, texts: Sequence[str], is_error: bool) -> Any:
    """The JSON value a tool answered: its structured content, or JSON in its text blocks."""
    if is_error:
        message = " ".join(" ".join(texts).split())[:300] or "no message"
        raise MappingError(f"tool {tool!r} failed: {message}")
    if structured is not None:
        return structured
    if not texts:
        raise MappingError(f"tool {tool!r}: the result has neither structured content nor text")
    try:
        values = [json.loads(text) for text in texts]
    except json.JSONDecodeError:
        start = " ".join(texts[0].split())[:60]
        raise MappingError(
            f"tool {tool!r}: the result is neither structured content nor JSON text "
            f"(it starts {start!r})"
        ) from None
    # One block holds the whole answer; several blocks are taken as one record each.
    return values[0] if len(values) == 1 else values


def at_path(data: Any, path: str, tool: str) -> Any:
    """Follow a dotted path (`a.b.0`) into a tool's answer; `""` is the answer itself."""
    value = data
    walked: list[str] = []
    for part in path.split(".") if path else []:
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            here = ".".join(walked)
            if isinstance(value, dict):
                keys = ", ".join(sorted(map(str, value))[:12]) or "none"
                found = f"an object with keys: {keys}"
            else:
                found = json_type(value)
            raise MappingError(f"tool {tool!r}: result has no {here!r} (found {found})")
    return value


def records_at(data: Any, path: str, tool: str) -> list[Any]:
    """The list of records at `path`; anything else is an answer that does not fit."""
    value = at_path(data, path, tool)
    if not isinstance(value, list):
        where = repr(path) if path else "the result"
        raise MappingError(f"tool {tool!r}: expected a list at {where}, got {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"a number ({value})"
    return names.get(type(value), type(value).__name__)


def fingerprint(raw: dict[str, Any]) -> str:
    """Stands in for the content hash of a record that cannot be a node."""
    return hashlib.sha256(repr(sorted(raw.items(), key=str)).encode()).hexdigest()


def record_id(raw: Any, mapping: ToolMapping) -> str | None:
    """A record's id: a non-empty string, or an integer taken as its decimal text."""
    if not isinstance(raw, dict):
        return None
    value = raw.get(mapping.id_field)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


def is_tombstone(raw: Any, mapping: ToolMapping) -> bool:
    return bool(mapping.deleted_field and isinstance(raw, dict) and raw.get(mapping.deleted_field))


def map_record(raw: Any, mapping: ToolMapping, where: str) -> SourceNode | Rejected | str:
    """One record of a tool's answer as a node, a quarantined node, or a problem line."""
    if not isinstance(raw, dict):
        return f"{where}: expected an object, got {json_type(raw)}"
    node_id = record_id(raw, mapping)
    if node_id is None:
        return f"{where}: missing or non-string {mapping.id_field!r}"
    bad_id = not_unicode("id", node_id)
    if bad_id is not None:
        return Rejected(storable_id(node_id), bad_id, fingerprint(raw))
    text = raw.get(mapping.text_field)
    if isinstance(text, list) and all(isinstance(item, str) for item in text):
        # The knowledge-graph preset: observations, one a line, so a trailing tag
        # observation becomes the tag line.
        text = mapping.text_join.join(text)
    if not isinstance(text, str):
        reason = f"{mapping.text_field!r} must be a string or a list of strings, got "
        return Rejected(node_id, reason + json_type(text), fingerprint(raw))
    kind = raw.get(mapping.kind_field) if mapping.kind_field else None
    if kind is not None and not isinstance(kind, str):
        reason = f"{mapping.kind_field!r} must be a string, got {json_type(kind)}"
        return Rejected(node_id, reason, fingerprint(raw))
    updated = raw.get(mapping.updated_at_field) if mapping.updated_at_field else None
    # check_fields applies the checks every source shares (the size limit among them).
    return check_fields({"id": node_id, "text": text, "kind": kind, "updated_at": updated}, where)


class ToolCalls(Protocol):
    """The server, as the reader sees it."""

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The tool's answer as JSON (see `payload`); `MappingError` when it failed."""
        ...

    async def tool_names(self) -> set[str]:
        """Every tool the server lists."""
        ...


class Reader:
    """Which tools to call for a snapshot, and the state kept between polls (loop thread only).

    With a changes tool and a cursor, a poll asks only for what changed and applies it to the
    nodes it keeps; without, every poll is a full listing and the engine's diff by content hash
    finds edits and deletes. A new connection starts again with a full listing, so nothing
    written during an outage can be missed.
    """

    def __init__(self, mapping: ToolMapping) -> None:
        self.mapping = mapping
        self.connection = 0
        self.tools: set[str] | None = None
        self.cursor: Any = None
        self.nodes: dict[str, SourceNode] = {}
        self.rejected: dict[str, Rejected] = {}
        self.pending: set[str] = set()
        # get_tool answers by node id, kept while the listing's updated_at stays the same.
        self.fetched: dict[str, tuple[str, SourceNode | Rejected]] = {}

    async def read(self, calls: ToolCalls, connection: int) -> Snapshot:
        if connection != self.connection:
            self.connection, self.tools, self.cursor = connection, None, None
        await self._check_tools(calls)
        problems: list[str] = []
        if self.cursor is not None:
            try:
                await self._changes(calls, problems)
            except MappingError as exc:
                log.warning("%s; reading the full listing instead", exc)
                self.cursor = None
        if self.cursor is None:
            await self._list(calls, problems)
        return Snapshot(dict(self.nodes), dict(self.rejected), problems, set(self.pending))

    async def _check_tools(self, calls: ToolCalls) -> None:
        if self.tools is None:
            self.tools = await calls.tool_names()
        missing = [tool for tool in self.mapping.tools() if tool not in self.tools]
        if missing:
            offered = ", ".join(sorted(self.tools)[:20]) or "none"
            self.tools = None  # look again next time: the server may gain it
            raise MappingError(f"the server has no tool {missing[0]!r} (it has: {offered})")

    async def _list(self, calls: ToolCalls, problems: list[str]) -> None:
        mapping = self.mapping
        data = await calls.call(mapping.list_tool, fill(mapping.list_args, {}))
        records = records_at(data, mapping.result_path, mapping.list_tool)
        self.nodes, self.rejected, self.pending = {}, {}, set()
        await self._apply(calls, mapping.list_tool, records, problems)
        if mapping.changes_tool:
            try:
                self.cursor = at_path(data, mapping.cursor_path, mapping.list_tool)
            except MappingError:
                self.cursor = None  # no cursor to start from: full listings it is
        listed = self.nodes.keys() | self.rejected.keys() | self.pending
        self.fetched = {k: v for k, v in self.fetched.items() if k in listed}

    async def _changes(self, calls: ToolCalls, problems: list[str]) -> None:
        mapping = self.mapping
        arguments = fill(mapping.changes_args, {"cursor": self.cursor})
        data = await calls.call(mapping.changes_tool, arguments)
        records = records_at(data, mapping.result_path, mapping.changes_tool)
        cursor = at_path(data, mapping.cursor_path, mapping.changes_tool)
        await self._apply(calls, mapping.changes_tool, records, problems)
        self.cursor = cursor

    async def _apply(
        self, calls: ToolCalls, tool: str, records: list[Any], problems: list[str]
    ) -> None:
        mapping = self.mapping
        for index, raw in enumerate(records):
            where = f"{tool} {mapping.result_path or 'result'}[{index}]"
            node_id = record_id(raw, mapping)
            got: SourceNode | Rejected | str | None
            if node_id is not None and is_tombstone(raw, mapping):
                self._forget(storable_id(node_id))
                continue
            # An id that cannot be encoded is quarantined as listed, never fetched.
            if (
                node_id is not None
                and lone_surrogate(node_id) is None
                and mapping.get_tool
                and mapping.text_field not in raw
            ):
                got = await self._get(calls, node_id, raw, where, problems)
                if got is None:
                    self._forget(node_id)
                    self.pending.add(node_id)
                    continue
            else:
                got = map_record(raw, mapping, where)
            if isinstance(got, str):
                problems.append(got)
                continue
            self._forget(got.id)
            if isinstance(got, Rejected):
                self.rejected[got.id] = got
            else:
                self.nodes[got.id] = got

    def _forget(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)
        self.rejected.pop(node_id, None)
        self.pending.discard(node_id)

    async def _get(
        self, calls: ToolCalls, node_id: str, listed: Any, where: str, problems: list[str]
    ) -> SourceNode | Rejected | str | None:
        """Fetch one listed node; None when it cannot be had now (neither new nor deleted)."""
        mapping = self.mapping
        stamp = listed.get(mapping.updated_at_field) if mapping.updated_at_field else None
        cached = self.fetched.get(node_id)
        if stamp is not None and cached is not None and cached[0] == str(stamp):
            return cached[1]
        try:
            data = await calls.call(mapping.get_tool, fill(mapping.get_args, {"id": node_id}))
            records = records_at(data, mapping.result_path, mapping.get_tool)
        except MappingError as exc:
            problems.append(f"{where}: {exc}")
            return None
        found = [r for r in records if record_id(r, mapping) == node_id]
        if not found:
            problems.append(f"{where}: tool {mapping.get_tool!r} returned no record {node_id!r}")
            return None
        got = map_record(found[0], mapping, f"{mapping.get_tool} {node_id}")
        if stamp is not None and not isinstance(got, str):
            self.fetched[node_id] = (str(stamp), got)
        return got


def backoff_delay(
    failures: int, initial: float, cap: float, uniform: Callable[[float, float], float]
) -> float:
    """Seconds to wait before reconnecting after `failures` failed attempts in a row.

    Exponential, capped, with jitter ("equal jitter": between half and all of the step), so
    many clients of one restarted server do not all come back at the same instant.
    """
    step = min(cap, initial * 2 ** min(failures, 30))
    return uniform(step / 2, step)


def default_uniform(low: float, high: float) -> float:
    return random.uniform(low, high)
