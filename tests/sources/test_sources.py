from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.sources import ClosableSource, HintingSource, bundled_sample_path
from amygdala_daemon.sources.base import diff, node_hash
from amygdala_daemon.sources.directory import DirectorySource
from amygdala_daemon.sources.errors import SourceError
from amygdala_daemon.sources.jsonl import JsonlSource


def line(**fields: object) -> str:
    return json.dumps(fields) + "\n"


def test_jsonl_later_lines_win_and_tombstones_delete(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(
        line(id="a", text="first\njoy:9")
        + line(id="b", text="bee\ncalm:8", kind="journal", updated_at="2026-01-01")
        + line(id="a", text="second\njoy:9")
        + line(id="b", deleted=True)
    )
    snapshot = JsonlSource(path).snapshot()
    assert list(snapshot.nodes) == ["a"]
    assert snapshot.nodes["a"].text == "second\njoy:9"


def test_jsonl_half_written_last_line_is_retried_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(line(id="a", text="x\njoy:9") + '{"id": "b", "text": "half wri')
    source = JsonlSource(path)
    snapshot = source.snapshot()
    assert list(snapshot.nodes) == ["a"] and snapshot.problems == []
    with path.open("a") as handle:
        handle.write('tten"}\n')
    assert sorted(source.snapshot().nodes) == ["a", "b"]


def test_jsonl_polls_read_only_what_was_appended_and_equal_a_full_read(tmp_path: Path) -> None:
    """Whatever happens to the file, a poll returns what reading it whole returns."""
    import random

    rng = random.Random(7)
    path = tmp_path / "g.jsonl"
    path.write_text("".join(line(id=f"n{i}", text=f"node {i}\njoy:9") for i in range(50)))
    source = JsonlSource(path)
    previous = source.snapshot()

    def append(text: str) -> None:
        with path.open("a") as handle:
            handle.write(text)

    def rewrite_in_place_same_size() -> None:
        data = bytearray(path.read_bytes())
        at = data.index(b"node 1")  # an early line: far from anything a tail check would see
        data[at : at + 6] = b"NODE 1"
        with path.open("r+b") as handle:  # same inode, same size
            handle.write(bytes(data))

    def replace_file() -> None:
        fresh = tmp_path / "fresh.jsonl"
        fresh.write_text(line(id="r", text="replaced\ncalm:9"))
        os.replace(fresh, path)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("append", lambda: append(line(id=f"a{rng.random()}", text="more\njoy:8"))),
        ("edit by a later line", lambda: append(line(id="n3", text="edited\ncalm:9"))),
        ("tombstone", lambda: append(line(id="n4", deleted=True))),
        ("bad line", lambda: append("{not json\n")),
        ("half a line", lambda: append('{"id": "h", "text": "half\\njoy:9"')),
        ("rest of the line", lambda: append("}\n")),
        ("rewrite in place", rewrite_in_place_same_size),
        ("truncate", lambda: path.write_text(path.read_text()[: len(path.read_text()) // 2])),
        ("replace", replace_file),
        ("append again", lambda: append(line(id="z", text="zed\njoy:9"))),
    ]
    for name, step in steps:
        step()
        polled = source.snapshot()
        assert polled == JsonlSource(path).snapshot(), name
        if name == "append":
            # Parsed once: the earlier nodes are the very objects the last poll returned.
            assert all(polled.nodes[k] is node for k, node in previous.nodes.items()), name
        if name == "rewrite in place":
            assert polled.nodes["n1"].text.startswith("NODE 1"), name
        previous = polled
    # An unchanged file read well after its mtime is not read again at all.
    old = time.time() - 60
    os.utime(path, (old, old))
    first = source.snapshot()
    assert source.snapshot() == first
    assert all(source.snapshot().nodes[k] is node for k, node in first.nodes.items())


def test_jsonl_bad_lines_are_problems_or_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(
        "not json\n"
        + line(text="no id")
        + line(id="n", text=5)
        + line(id="k", text="t", kind=["x"])
        + line(id="huge", text="x" * 300_000)
        + "[1, 2]\n"
        + line(id="ok", text="fine\njoy:9")
    )
    snapshot = JsonlSource(path).snapshot()
    assert list(snapshot.nodes) == ["ok"]
    assert {k: v.reason for k, v in snapshot.rejected.items()} == {
        "n": "'text' must be a string, got int",
        "k": "'kind' must be a string, got list",
        "huge": "text is 300000 characters, over the limit of 200000",
    }
    assert snapshot.problems == [
        "g.jsonl:1: not valid JSON",
        "g.jsonl:2: missing or non-string 'id'",
        "g.jsonl:6: expected a JSON object, got list",
    ]


def test_jsonl_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read jsonl source .*missing.jsonl"):
        JsonlSource(tmp_path / "missing.jsonl").snapshot()


def test_diff_by_hash(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(line(id="a", text="same\njoy:9") + line(id="b", text="new text\njoy:9"))
    snapshot = JsonlSource(path).snapshot()
    known = {"a": node_hash("same\njoy:9  \r\n", None), "b": "old", "c": "gone"}
    changes = diff(snapshot, known)
    assert [n.id for n in changes.upserts] == ["b"]
    assert changes.deletes == ["c"]


def test_directory_source(tmp_path: Path) -> None:
    root = tmp_path / "graph"
    (root / "journal").mkdir(parents=True)
    (root / "journal" / "day1.md").write_text("A day.\njoy:9")
    (root / "note.txt").write_text("A note.\ncalm:8")
    (root / "skip.json").write_text("{}")
    (root / ".hidden.md").write_text("hidden\njoy:9")
    (root / "bad.md").write_bytes(b"caf\xe9\njoy:9")
    old = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    (root / "fresh.md").write_text("being written")
    snapshot = DirectorySource(root, settle_s=5.0).snapshot()
    assert sorted(snapshot.nodes) == ["journal/day1.md", "note.txt"]
    assert snapshot.pending == {"fresh.md"}
    assert snapshot.rejected["bad.md"].reason == "not valid UTF-8 at byte 3"
    # A file still settling is not taken as deleted.
    assert diff(snapshot, {"fresh.md": "h"}).deletes == []
    with pytest.raises(SourceError, match="not a directory"):
        DirectorySource(tmp_path / "nope").snapshot()


def test_bundled_sample_graph_is_realistic() -> None:
    snapshot = JsonlSource(bundled_sample_path()).snapshot()
    assert len(snapshot.nodes) >= 300 and not snapshot.problems
    parsed = [parse_text(n.text) for n in snapshot.nodes.values()]
    positives: dict[str, int] = {}
    for p in parsed:
        for name, score in p.tags.items():
            if score >= 8:
                positives[name] = positives.get(name, 0) + 1
    assert len([n for n, c in positives.items() if c >= 5]) >= 12
    assert sum(1 for p in parsed if p.malformed) >= 5
    assert sum(1 for p in parsed if not p.tags) >= 5
    assert sum(1 for p in parsed if p.tags and len(p.content) < 40) >= 5
    kinds = {n.kind for n in snapshot.nodes.values()}
    assert {"journal", "digest", "pattern"} <= kinds


def test_optional_capabilities_are_protocols_the_daemon_can_ask_for(tmp_path: Path) -> None:
    from amygdala_daemon.sources.mcp import McpSource

    assert issubclass(McpSource, HintingSource) and issubclass(McpSource, ClosableSource)
    # The file sources have nothing to hint with and nothing to let go.
    for local in (JsonlSource(tmp_path / "g.jsonl"), DirectorySource(tmp_path)):
        assert not isinstance(local, HintingSource | ClosableSource)
