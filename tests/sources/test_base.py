"""Rules every source shares: a node that cannot be stored is quarantined, never fatal.

JSON can spell a lone surrogate (`"\\ud800"`), and a file name can hold bytes that are not
UTF-8; neither can be encoded, hashed or written to SQLite as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.config import from_dict
from amygdala_daemon.sources import open_source
from amygdala_daemon.sources.base import Rejected, storable_id
from amygdala_daemon.sources.directory import DirectorySource
from amygdala_daemon.sources.jsonl import JsonlSource
from amygdala_daemon.sources.mcp import McpSource
from amygdala_daemon.store.ledger import Ledger
from tests.helpers.graphs import config_toml, sample_nodes
from tests.helpers.mcp import MemoryServer

CONTENT = "A long enough line of content for the node to be eligible as an example."

# Raw JSONL lines: json.dumps would escape the backslash, and these must reach json.loads as
# the six characters \ud800.
BAD_LINES = [
    '{"id": "bad-text", "text": "' + CONTENT + ' \\ud800 there.\\njoy:9"}',
    '{"id": "bad-\\udfff-id", "text": "' + CONTENT + '\\njoy:9"}',
    '{"id": "bad-kind", "kind": "jour\\udc00nal", "text": "' + CONTENT + '\\njoy:9"}',
    '{"id": "bad-stamp", "updated_at": "2025\\ud800", "text": "' + CONTENT + '\\njoy:9"}',
]
EXPECTED_REASONS = {
    "bad-text": "text is not valid Unicode (lone surrogate at character ",
    "bad-\\udfff-id": "id is not valid Unicode (lone surrogate at character 4)",
    "bad-kind": "kind is not valid Unicode (lone surrogate at character 4)",
    "bad-stamp": "updated_at is not valid Unicode (lone surrogate at character 4)",
}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amygdala_daemon", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def assert_reasons(rejected: dict[str, str]) -> None:
    assert rejected.keys() == EXPECTED_REASONS.keys()
    for node_id, reason in rejected.items():
        assert reason.startswith(EXPECTED_REASONS[node_id]), (node_id, reason)


def test_an_unencodable_id_is_stored_escaped_and_the_same_every_time() -> None:
    raw = json.loads('"a\\ud800b"')
    assert storable_id(raw) == "a\\ud800b"
    assert storable_id(json.loads('"a\\ud800b"')) == storable_id(raw)
    storable_id(raw).encode("utf-8")
    assert storable_id("plain \\ud800 text") == "plain \\ud800 text"  # valid: left alone


def test_jsonl_quarantines_unencodable_fields_and_reads_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "graph.jsonl"
    good = json.dumps({"id": "good", "text": CONTENT + "\njoy:9"})
    # A tombstone for the escaped id removes it: the id a bad line stands for is stable.
    tombstone = '{"id": "gone-\\ud800", "deleted": true}'
    gone = '{"id": "gone-\\ud800", "text": "x"}'
    path.write_text("\n".join([good, *BAD_LINES, gone, tombstone]) + "\n")
    source = JsonlSource(path)
    snapshot = source.snapshot()
    assert list(snapshot.nodes) == ["good"]
    assert_reasons({node_id: r.reason for node_id, r in snapshot.rejected.items()})
    assert snapshot.problems == []
    again = JsonlSource(path).snapshot()
    assert {k: r.fingerprint for k, r in again.rejected.items()} == {
        k: r.fingerprint for k, r in snapshot.rejected.items()
    }


def test_directory_quarantines_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "graph"
    root.mkdir()
    (root / "good.md").write_text(CONTENT + "\njoy:9\n")
    with open(os.path.join(os.fsencode(root), b"bad-\xff.md"), "wb") as handle:
        handle.write((CONTENT + "\njoy:9\n").encode())
    snapshot = DirectorySource(root, settle_s=0).snapshot()
    assert list(snapshot.nodes) == ["good.md"]
    assert list(snapshot.rejected) == ["bad-\\udcff.md"]
    rejected = snapshot.rejected["bad-\\udcff.md"]
    assert rejected.reason == "file name is not valid UTF-8 (lone surrogate at character 4)"
    rejected.reason.encode("utf-8")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MemoryServer]:
    started = MemoryServer(tmp_path)
    yield started
    started.stop()


def test_mcp_records_with_lone_surrogates_are_quarantined(server: MemoryServer) -> None:
    """Records in a JSON text block: the escapes reach the mapping as lone surrogates.

    (In structured content the SDK's own JSON-RPC parser refuses them first, and the read
    fails as a whole with one line: a source error, retried on the next poll.)
    """
    records: list[dict[str, Any]] = [json.loads(line) for line in BAD_LINES]
    records.append({"id": "good", "text": CONTENT + "\njoy:9"})
    records.append({"id": "listed\udc80", "text": ["observation", "joy:9"]})
    server.write(*records)
    server.start()
    config = {"kind": "mcp", "url": server.url, "list_tool": "list_nodes_text"}
    source = open_source(from_dict({"source": config}).source)
    assert isinstance(source, McpSource)
    try:
        snapshot = source.snapshot()
    finally:
        source.close()
    assert list(snapshot.nodes) == ["good"]
    assert all(isinstance(r, Rejected) for r in snapshot.rejected.values())
    reasons = {k: r.reason for k, r in snapshot.rejected.items()}
    listed = reasons.pop("listed\\udc80")
    assert listed == "id is not valid Unicode (lone surrogate at character 6)"
    assert_reasons(reasons)


def write_config(tmp_path: Path, model_dir: Path, source: dict[str, Any]) -> Path:
    config = tmp_path / "config.toml"
    table = {
        "state_dir": str(tmp_path / "state"),
        "source": source,
        "model": {"name": str(model_dir), "layers": [1, 2], "threads": 1},
    }
    config.write_text(config_toml(table))
    return config


def quarantined_rows(state: Path) -> dict[str, str]:
    ledger = Ledger(state / "ledger.sqlite3", readonly=True)
    try:
        return dict(ledger.quarantined())
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_commands_quarantine_lone_surrogates_and_ingest_the_rest(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    graph = tmp_path / "graph.jsonl"
    good = [json.dumps(node) for node in sample_nodes()[:40]]
    graph.write_text("\n".join([*good[:20], *BAD_LINES, *good[20:]]) + "\n")
    config = write_config(tmp_path, tiny_model_dir, {"kind": "jsonl", "path": str(graph)})

    first = cli("--config", config, "run", "--once")
    assert first.returncode == 0, first.stderr
    assert "4 quarantined" in first.stdout and "published generation 1" in first.stdout
    assert_reasons(quarantined_rows(tmp_path / "state"))

    status = cli("--config", config, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["nodes"]["quarantined"] == 4 and report["backlog"] == 0
    assert report["nodes"]["applied"] + report["nodes"]["ineligible"] == 40
    assert_reasons({q["id"]: q["reason"] for q in report["quarantined"]})
    text = cli("--config", config, "status")
    assert text.returncode == 0 and "bad-\\udfff-id" in text.stdout, text.stderr

    # The same bad ids are the same stored ids: a second poll has nothing to do.
    second = cli("--config", config, "run", "--once")
    assert second.returncode == 0, second.stderr
    assert "0 applied, 0 quarantined, 0 ineligible, 0 deleted" in second.stdout

    rebuilt = cli("--config", config, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "4 quarantined" in rebuilt.stdout
    assert_reasons(quarantined_rows(tmp_path / "state"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_directory_graph_with_an_undecodable_file_name_runs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    root = tmp_path / "graph"
    root.mkdir()
    for index, node in enumerate(sample_nodes()[:20]):
        (root / f"node-{index:02d}.md").write_text(node["text"])
    with open(os.path.join(os.fsencode(root), b"bad-\xff.md"), "wb") as handle:
        handle.write((CONTENT + "\njoy:9\n").encode())
    source = {"kind": "directory", "path": str(root), "settle_s": 0.0}
    config = write_config(tmp_path, tiny_model_dir, source)

    first = cli("--config", config, "run", "--once")
    assert first.returncode == 0, first.stderr
    assert "1 quarantined" in first.stdout
    assert quarantined_rows(tmp_path / "state") == {
        "bad-\\udcff.md": "file name is not valid UTF-8 (lone surrogate at character 4)"
    }
    status = cli("--config", config, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["backlog"] == 0
    second = cli("--config", config, "run", "--once")
    assert second.returncode == 0, second.stderr
    assert "0 applied, 0 quarantined, 0 ineligible, 0 deleted" in second.stdout
