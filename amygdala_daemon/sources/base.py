"""What every memory source yields: nodes, problems, and the diff against what is known."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SourceNode:
    """One memory-graph node as the source reports it."""

    id: str
    text: str
    kind: str | None = None
    updated_at: str | None = None

    @functools.cached_property
    def content_hash(self) -> str:
        # Cached: a source may hand out the same node on every poll, and the diff asks each time.
        return node_hash(self.text, self.kind)


@dataclass(frozen=True)
class Rejected:
    """A node the source could read but not accept, quarantined with a reason.

    `fingerprint` stands in for the content hash, so the same bad input is not retried
    until it changes.
    """

    id: str
    reason: str
    fingerprint: str


@dataclass
class Snapshot:
    """Everything the source holds right now."""

    nodes: dict[str, SourceNode] = field(default_factory=dict)
    rejected: dict[str, Rejected] = field(default_factory=dict)
    # Problems with no node id to pin them on (a line that is not JSON, say).
    problems: list[str] = field(default_factory=list)
    # Ids present but not readable yet (a half-written file): neither changed nor deleted.
    pending: set[str] = field(default_factory=set)

    def copy(self) -> Snapshot:
        """A snapshot the caller may change; the nodes themselves are immutable and shared."""
        return Snapshot(
            dict(self.nodes), dict(self.rejected), list(self.problems), set(self.pending)
        )


@dataclass
class Changes:
    """The difference between a snapshot and the ledger."""

    upserts: list[SourceNode] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.rejected) + len(self.deletes)


class MemorySource(Protocol):
    """A memory graph that can be listed. Sources never touch the ledger."""

    def describe(self) -> str:
        """A short human name, for errors and status ("jsonl /path/graph.jsonl")."""
        ...

    def snapshot(self) -> Snapshot:
        """Read the whole graph. Raises `SourceError` when it cannot be read at all."""
        ...


# Capabilities a source may add to `MemorySource`; the daemon asks with `isinstance`.


@runtime_checkable
class HintingSource(Protocol):
    """A source that can tell when the graph may have changed, so the daemon reads at once."""

    def start_hints(self, callback: Callable[[], None]) -> None:
        """From now on, call `callback` (from any thread) whenever the graph may have changed."""
        ...


@runtime_checkable
class ClosableSource(Protocol):
    """A source holding a connection or a process, which `close()` lets go."""

    def close(self) -> None:
        """Release what the source holds; it is not read again."""
        ...


def normalize_text(text: str) -> str:
    """Line endings and trailing whitespace do not make a change."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def node_hash(text: str, kind: str | None) -> str:
    """Identity for change detection: sha256 of the normalized text and the kind."""
    digest = hashlib.sha256()
    digest.update((kind or "").encode("utf-8"))
    digest.update(b"\x00")
    digest.update(normalize_text(text).encode("utf-8"))
    return digest.hexdigest()


def diff(snapshot: Snapshot, known: Mapping[str, str]) -> Changes:
    """Compare a snapshot with the ledger's `{node id: hash}`.

    A node whose hash the ledger already has is never sent to the model again.
    """
    changes = Changes()
    for node_id, node in snapshot.nodes.items():
        if known.get(node_id) != node.content_hash:
            changes.upserts.append(node)
    for node_id, rejected in snapshot.rejected.items():
        if known.get(node_id) != rejected.fingerprint:
            changes.rejected.append(rejected)
    present = snapshot.nodes.keys() | snapshot.rejected.keys() | snapshot.pending
    changes.deletes = sorted(node_id for node_id in known if node_id not in present)
    return changes


def lone_surrogate(value: str) -> int | None:
    r"""Where `value` holds a lone surrogate, or None when it encodes as UTF-8.

    JSON may spell one (`"\ud800"`), and Python names undecodable file-name bytes with
    them; such a string cannot be hashed, tokenized or written to SQLite.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def storable_id(node_id: str) -> str:
    r"""The id as the ledger stores it: itself, or with each lone surrogate escaped.

    The escape (`\ud800`, backslashreplace) depends on nothing but the id, so the same
    bad id is the same stored id on every poll, and its quarantine is not written again.

    >>> storable_id("a\ud800b")
    'a\\ud800b'
    """
    if lone_surrogate(node_id) is None:
        return node_id
    return node_id.encode("utf-8", "backslashreplace").decode("utf-8")


def not_unicode(field: str, value: str) -> str | None:
    """The quarantine reason when `value` cannot be encoded, else None."""
    at = lone_surrogate(value)
    if at is None:
        return None
    return f"{field} is not valid Unicode (lone surrogate at character {at})"


# Larger texts are rejected: the model sees at most `max_tokens` anyway, and the ledger
# keeps every content string.
MAX_TEXT_CHARS = 200_000


def check_fields(raw: object, where: str) -> SourceNode | Rejected | str:
    """Validate one raw record (a dict from JSON) into a node.

    Returns the node, a `Rejected` when it has an id but bad fields, or a problem string
    when it has no usable id at all.
    """
    if not isinstance(raw, dict):
        return f"{where}: expected a JSON object, got {type(raw).__name__}"
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id.strip():
        return f"{where}: missing or non-string 'id'"
    # repr escapes lone surrogates, so the fingerprint of any record can be computed.
    fingerprint = hashlib.sha256(repr(sorted(raw.items(), key=str)).encode()).hexdigest()
    reason = not_unicode("id", node_id)
    if reason is not None:
        return Rejected(storable_id(node_id), reason, fingerprint)
    text = raw.get("text")
    if not isinstance(text, str):
        return Rejected(node_id, f"'text' must be a string, got {type(text).__name__}", fingerprint)
    if len(text) > MAX_TEXT_CHARS:
        reason = f"text is {len(text)} characters, over the limit of {MAX_TEXT_CHARS}"
        return Rejected(node_id, reason, fingerprint)
    kind = raw.get("kind")
    if kind is not None and not isinstance(kind, str):
        return Rejected(node_id, f"'kind' must be a string, got {type(kind).__name__}", fingerprint)
    updated_at = None if raw.get("updated_at") is None else str(raw.get("updated_at"))
    fields = {"text": text, "kind": kind or "", "updated_at": updated_at or ""}
    for field_name, value in fields.items():
        reason = not_unicode(field_name, value)
        if reason is not None:
            return Rejected(node_id, reason, fingerprint)
    return SourceNode(id=node_id, text=text, kind=kind, updated_at=updated_at)
