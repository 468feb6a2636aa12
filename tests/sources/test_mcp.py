"""The mcp source against real MCP servers: tests/helpers/memory_mcp_server.py over Streamable HTTP
(through `Engine.sync` and the real daemon), and the npm reference memory server over stdio."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import from_dict
from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.core.tool_mapping import KNOWLEDGE_GRAPH_PACKAGE, effective, tool_mapping
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.sources import open_source
from amygdala_daemon.sources.base import MAX_TEXT_CHARS, Rejected, SourceNode
from amygdala_daemon.sources.errors import SourceError
from amygdala_daemon.sources.mcp import McpSource, endpoint
from amygdala_daemon.sources.mcp_mapping import backoff_delay, fill, map_record
from tests.helpers import TESTS
from tests.helpers.daemon import DaemonProcess, next_event, request, wait_for
from tests.helpers.folds import assert_same_fold
from tests.helpers.graphs import edited, make_config, sample_nodes, write_jsonl
from tests.helpers.mcp import MemoryServer

REFERENCE_SERVER = TESTS / "npm/node_modules/@modelcontextprotocol/server-memory/dist/index.js"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MemoryServer]:
    started = MemoryServer(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def sources() -> Iterator[list[McpSource]]:
    opened: list[McpSource] = []
    yield opened
    for source in opened:
        source.close()


def mcp_source(opened: list[McpSource], **keys: Any) -> McpSource:
    source = open_source(from_dict({"source": {"kind": "mcp", **keys}}).source)
    assert isinstance(source, McpSource)
    opened.append(source)
    return source


# -- config and mapping rules, no server -------------------------------------------------------


def test_mcp_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"source.url: the mcp source needs source.url"):
        from_dict({"source": {"kind": "mcp"}})
    with pytest.raises(ConfigError, match=r"source.url: give source.url or source.command"):
        from_dict({"source": {"kind": "mcp", "url": "http://h/mcp", "command": ["x"]}})
    with pytest.raises(ConfigError, match=r"source.url: 'localhost:7777' is not an http"):
        from_dict({"source": {"kind": "mcp", "url": "localhost:7777"}})
    with pytest.raises(ConfigError, match=r"source.list_args: not valid JSON"):
        from_dict({"source": {"kind": "mcp", "url": "http://h/mcp", "list_args": "{limit: 5}"}})
    # The preset brings the reference server's command and mapping.
    config = from_dict({"source": {"kind": "mcp", "preset": "knowledge-graph"}}).source
    chosen = effective(config)
    assert chosen.command == ["npx", "-y", KNOWLEDGE_GRAPH_PACKAGE]
    assert (chosen.list_tool, chosen.result_path, chosen.id_field) == (
        "read_graph",
        "entities",
        "name",
    )
    explicit = effective(from_dict({"source": {**config.__dict__, "id_field": "key"}}).source)
    assert explicit.id_field == "key", "a key set in the config wins over the preset"


def test_mapping_rules() -> None:
    mapping = tool_mapping(effective(from_dict({}).source))
    assert fill({"since": "{cursor}", "q": ["after {cursor}"]}, {"cursor": 7}) == {
        "since": 7,
        "q": ["after 7"],
    }
    node = map_record({"id": 12, "text": ["Calm day.", "calm:9"], "kind": "journal"}, mapping, "w")
    assert node == SourceNode("12", "Calm day.\ncalm:9", "journal", None)
    huge = map_record({"id": "h", "text": "x" * (MAX_TEXT_CHARS + 1)}, mapping, "w")
    assert isinstance(huge, Rejected) and "over the limit" in huge.reason
    assert endpoint("http://localhost:7777") == "http://localhost:7777/mcp"
    assert endpoint("http://h:1/memory/mcp") == "http://h:1/memory/mcp"
    # Jittered exponential backoff: between half and all of a doubling step, capped.
    low, high = (lambda a, b: a), (lambda a, b: b)
    assert [backoff_delay(n, 0.5, 30, high) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, 0.5, 30, low) == 2.0


# -- the test server over Streamable HTTP -----------------------------------------------------


def test_engine_ingests_then_applies_additions_edits_and_deletes(
    tmp_path: Path, tiny_model_dir: Path, server: MemoryServer, sources: list[McpSource]
) -> None:
    nodes = sample_nodes()[:30]
    server.write(*nodes, {"id": "bad", "text": 42})
    server.start()
    source = mcp_source(sources, url=server.url)
    config = make_config(tmp_path / "state", tmp_path / "unused.jsonl", tiny_model_dir)
    engine = Engine(config)
    try:
        first = engine.sync(source)
        assert len(first.applied) + len(first.ineligible) == 30 and len(first.applied) > 20
        reason = "'text' must be a string or a list of strings, got a number (42)"
        assert first.quarantined == [("bad", reason)]
        assert engine.fold is not None
        total = engine.fold.total.count

        text = "A long quiet walk by the river at dusk, nobody else around.\ncalm:9"
        server.call("upsert_node", id="added", text=text)
        assert engine.sync(source).applied == ["added"]

        victim, changed = first.applied[0], edited(nodes[3], "Then it all changed.")
        assert changed["id"] in first.applied[1:]
        server.call("delete_node", id=victim)
        server.call("upsert_node", id=changed["id"], text=changed["text"])
        report = engine.sync(source)
        assert report.deleted == [victim] and report.applied == [changed["id"]]
        known = engine.ledger.known_hashes()
        assert victim not in known
        assert known[changed["id"]] == SourceNode(changed["id"], changed["text"]).content_hash
        assert engine.fold.total.count == total  # one added, one deleted, one replaced
        assert engine.sync(source).changes == 0
    finally:
        engine.close()


def test_cursor_changes_and_get_tool(server: MemoryServer, sources: list[McpSource]) -> None:
    server.write(*({"id": i, "text": f"Node {i}.\ncalm:9"} for i in "abc"))
    server.start()
    feed = mcp_source(sources, url=server.url, changes_tool="changes_since")
    assert sorted(feed.snapshot().nodes) == ["a", "b", "c"]
    # Written with an old sequence number: only a full listing can see it, the feed cannot.
    server.write({"id": "stale", "text": "Old.\ncalm:9"}, seq=0)
    server.call("upsert_node", id="d", text="Node d.\ncalm:9")
    server.call("delete_node", id="a")
    assert sorted(feed.snapshot().nodes) == ["b", "c", "d"]
    listing = mcp_source(sources, url=server.url)
    assert sorted(listing.snapshot().nodes) == ["b", "c", "d", "stale"]
    # An index of ids: each node is fetched with get_node.
    fetched = mcp_source(sources, url=server.url, list_tool="list_ids", get_tool="get_node")
    assert fetched.snapshot().nodes["d"].text == "Node d.\ncalm:9"


def test_malformed_nodes_are_quarantined_and_bad_answers_named(
    server: MemoryServer, sources: list[McpSource]
) -> None:
    server.write(
        {"id": "good", "text": "A fine day.\nwarmth:8"},
        {"id": "number", "text": 42},
        {"text": "nobody's node"},
        {"id": "huge", "text": "x" * (MAX_TEXT_CHARS + 1)},
        "just a string",
        {"id": "kind", "text": "Fine.\ncalm:9", "kind": 3},
        {"id": "mixed", "text": ["line", 5]},
    )
    server.start()
    snapshot = mcp_source(sources, url=server.url).snapshot()
    assert list(snapshot.nodes) == ["good"]
    reasons = {node_id: r.reason for node_id, r in snapshot.rejected.items()}
    assert reasons == {
        "number": "'text' must be a string or a list of strings, got a number (42)",
        "huge": f"text is {MAX_TEXT_CHARS + 1} characters, over the limit of {MAX_TEXT_CHARS}",
        "kind": "'kind' must be a string, got a number (3)",
        "mixed": "'text' must be a string or a list of strings, got a list",
    }
    assert snapshot.problems == [
        "list_nodes nodes[2]: missing or non-string 'id'",
        "list_nodes nodes[4]: expected an object, got a string",
    ]
    # JSON in a text block, with no structured content, reads the same.
    assert list(
        mcp_source(sources, url=server.url, list_tool="list_nodes_text").snapshot().nodes
    ) == ["good"]

    # Answers that do not fit the mapping fail the whole read, with one line naming the tool.
    bad = {
        "broken_listing": "tool 'broken_listing': expected a list at 'nodes', got a number (42)",
        "not_json": "tool 'not_json': the result is neither structured content nor JSON text",
        "nope": "the server has no tool 'nope' (it has: broken_listing, changes_since, ",
        "get_node": "tool 'get_node' failed: no such node",
    }
    for tool, expected in bad.items():
        arguments = '{"id": "x"}' if tool == "get_node" else "{}"
        source = mcp_source(sources, url=server.url, list_tool=tool, list_args=arguments)
        with pytest.raises(SourceError) as failed:
            source.snapshot()
        assert str(failed.value).startswith(f"mcp {server.url}: {expected}"), str(failed.value)
        assert "\n" not in str(failed.value)
    wrong_path = mcp_source(sources, url=server.url, result_path="data.items")
    with pytest.raises(SourceError) as failed:
        wrong_path.snapshot()
    found = "found an object with keys: cursor, nodes"
    assert f"tool 'list_nodes': result has no 'data' ({found})" in str(failed.value)


def test_a_slow_server_times_out_then_recovers(
    server: MemoryServer, sources: list[McpSource]
) -> None:
    server.write({"id": "a", "text": "Node a.\ncalm:9"})
    data = json.loads(server.store.read_text())
    server.store.write_text(json.dumps({**data, "delay": 5}))
    server.start()
    source = mcp_source(sources, url=server.url, timeout_s=0.5, backoff_max_s=0.5)
    with pytest.raises(SourceError, match=rf"^mcp {server.url}: no answer within 0.5s$"):
        source.snapshot()
    server.store.write_text(json.dumps(data))

    def answers() -> bool:
        try:
            return list(source.snapshot().nodes) == ["a"]
        except SourceError:
            return False  # reconnecting after the backoff

    wait_for(answers, what="the source to reconnect")


# -- the real daemon ---------------------------------------------------------------------------


@pytest.mark.slow
def test_change_notice_makes_the_daemon_poll_at_once(
    tmp_path: Path, tiny_model_dir: Path, server: MemoryServer, daemons: list[DaemonProcess]
) -> None:
    server.write(*sample_nodes()[:80])
    server.start()
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        [],
        source={"kind": "mcp", "url": server.url},
        # Polls only at start: anything applied later came from a change notice.
        daemon={"poll_interval": 3600.0, "reconcile_interval": 3600.0},
    ).start()
    daemons.append(daemon)
    wait_for(daemon.generation, what="the first generation")
    client = daemon.client()
    text = "A warm letter from an old friend arrived this morning.\nwarmth:9"
    server.call("upsert_node", id="hinted", text=text)
    assert next_event(client, "node_applied")["id"] == "hinted"
    applied = request(client, {"op": "status"})["status"]["nodes"]["applied"]
    server.call("delete_node", id="hinted")
    wait_for(
        lambda: request(client, {"op": "status"})["status"]["nodes"]["applied"] == applied - 1,
        what="the delete, through a change notice",
    )
    assert daemon.stop() == 0


@pytest.mark.slow
def test_outage_is_reported_and_caught_up_exactly(
    tmp_path: Path, tiny_model_dir: Path, server: MemoryServer, daemons: list[DaemonProcess]
) -> None:
    nodes = sample_nodes()
    server.write(*nodes[:60])
    server.start()
    daemon = DaemonProcess(
        tmp_path,
        tiny_model_dir,
        [],
        source={"kind": "mcp", "url": server.url, "backoff_max_s": 0.5},
        daemon={"poll_interval": 0.3},
    ).start()
    daemons.append(daemon)
    wait_for(daemon.generation, what="the first generation")
    client = daemon.client()

    server.stop()
    assert server.url in next_event(client, "source_error")["error"]
    status = request(client, {"op": "status"})["status"]
    assert server.url in status["daemon"]["source_error"]
    # Written while the server is down: two new nodes, an edit, a delete.
    server.write(
        *nodes[60:62],
        edited(nodes[1], "Later it changed."),
        {"id": nodes[0]["id"], "deleted": True},
    )
    server.start()
    next_event(client, "source_recovered")
    assert daemon.stop() == 0

    # The state equals a from-scratch run over what the server holds now.
    final = [*nodes[2:62], edited(nodes[1], "Later it changed.")]
    reference_config = make_config(
        tmp_path / "reference",
        write_jsonl(tmp_path / "final.jsonl", final),
        tiny_model_dir,
        model={"batch_size": 1},
    )
    reference = Engine(reference_config)
    try:
        reference.sync(open_source(reference_config.source))
    finally:
        reference.close()
    caught_up = Engine(from_dict(tomllib.loads(daemon.config.read_text())))
    try:
        assert caught_up.fold is not None and reference.fold is not None
        assert set(caught_up.ledger.known_hashes()) == {n["id"] for n in final}
        assert_same_fold(caught_up.fold, reference.fold)
    finally:
        caught_up.close()


# -- the npm reference memory server over stdio ----------------------------------------------


def test_reference_memory_server_over_stdio(
    tmp_path: Path, tiny_model_dir: Path, sources: list[McpSource]
) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (no `node` on PATH)")
    if not REFERENCE_SERVER.is_file():
        pytest.skip(
            "@modelcontextprotocol/server-memory is missing: npm install --prefix tests/npm"
        )
    memory = tmp_path / "memory.jsonl"
    nodes = sample_nodes()[:12]

    def entity(node: dict[str, Any]) -> str:
        observations = node["text"].split("\n")  # the tag line is the last observation
        return json.dumps(
            {
                "type": "entity",
                "name": node["id"],
                "entityType": "journal",
                "observations": observations,
            }
        )

    relation = {
        "type": "relation",
        "from": nodes[0]["id"],
        "to": nodes[1]["id"],
        "relationType": "follows",
    }
    memory.write_text("\n".join([*map(entity, nodes), json.dumps(relation)]))
    source = mcp_source(
        sources,
        preset="knowledge-graph",
        command=["env", f"MEMORY_FILE_PATH={memory}", "node", str(REFERENCE_SERVER)],
    )
    snapshot = source.snapshot()
    assert (
        snapshot.nodes == {n["id"]: SourceNode(n["id"], n["text"], "journal", None) for n in nodes}
        and not snapshot.problems
    )

    config = make_config(tmp_path / "state", tmp_path / "unused.jsonl", tiny_model_dir)
    engine = Engine(config)
    try:
        report = engine.sync(source)
        assert report.applied and not report.quarantined  # tag lines parsed from observations
        memory.write_text("\n".join(map(entity, [*nodes[1:], sample_nodes()[20]])))
        report = engine.sync(source)
        assert report.deleted == [nodes[0]["id"]] and report.applied + report.ineligible == [
            sample_nodes()[20]["id"]
        ]
    finally:
        engine.close()
