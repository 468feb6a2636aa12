"""Typed configuration: one dataclass per concern, combined into `Config`, read from TOML.

Every field has a default, so an empty file (or none at all) is a working configuration.
A bad value raises `ConfigError` naming the key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from amygdala_daemon.core.errors import ConfigError
from amygdala_daemon.core.scale_config import DistributedConfig, LedgerConfig
from amygdala_daemon.core.schedule import parse_interval
from amygdala_daemon.core.tool_mapping import MappingError, effective, tool_mapping

_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

# The keys with a fixed set of values; the validator accepts exactly these.
SourceKind = Literal["jsonl", "directory", "mcp"]
Preset = Literal["", "knowledge-graph"]
ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
Pooling = Literal["mean", "last"]
Method = Literal["mean_diff", "diag_lda", "shrinkage_lda", "score_ridge"]
Shrinkage = Literal["mean_eigenvalue", "oas"]
VectorsDtype = Literal["float32", "float16", "bfloat16"]


def _min(value: float) -> dict[str, Any]:
    return {"min": value}


@dataclass
class SourceConfig:
    kind: SourceKind = "jsonl"
    """Where the memory graph lives."""
    path: str = ""
    """jsonl file or directory; empty means the bundled sample graph."""
    url: str = ""
    """mcp: Streamable HTTP endpoint, e.g. http://localhost:7777/mcp (no path: /mcp)."""
    command: list[str] = field(default_factory=list)
    """mcp: argv of a stdio server, e.g. ["npx", "@modelcontextprotocol/server-memory"]."""
    args: list[str] = field(default_factory=list)
    """mcp: more arguments for the stdio server, appended to `command`."""
    preset: Preset = ""
    """mcp: a ready-made tool mapping for a known memory server (fills keys left at defaults)."""
    list_tool: str = "list_nodes"
    """mcp: the tool that lists every node."""
    list_args: str = "{}"
    """mcp: its arguments, a JSON object."""
    get_tool: str = ""
    """mcp: optional tool that fetches one node, for listed records that carry no text."""
    get_args: str = '{"id": "{id}"}'
    """mcp: its arguments, a JSON object; `{id}` is replaced by the node id."""
    changes_tool: str = ""
    """mcp: optional tool that returns the nodes changed since a cursor (tombstones too)."""
    changes_args: str = '{"cursor": "{cursor}"}'
    """mcp: its arguments, a JSON object; `{cursor}` is replaced by the last cursor."""
    cursor_path: str = "cursor"
    """mcp: dotted path of the cursor in the list and changes results."""
    result_path: str = "nodes"
    """mcp: dotted path of the list of records in each result ("" for the result itself)."""
    id_field: str = "id"
    """mcp: record field holding the node id."""
    text_field: str = "text"
    """mcp: record field holding the text (a string, or a list of strings to join)."""
    kind_field: str = "kind"
    """mcp: record field holding the kind ("" for none)."""
    updated_at_field: str = "updated_at"
    """mcp: record field holding the update time ("" for none)."""
    deleted_field: str = "deleted"
    """mcp: record field that marks a tombstone in a changes result ("" for none)."""
    text_join: str = "\n"
    """mcp: joins a list-of-strings text field into the node text."""
    timeout_s: float = field(default=30.0, metadata=_min(0.1))
    """mcp: each request (and each connection attempt) is abandoned after this long."""
    backoff_max_s: float = field(default=30.0, metadata=_min(0.1))
    """mcp: longest wait between reconnect attempts (exponential backoff with jitter)."""
    settle_s: float = field(default=1.0, metadata=_min(0.0))
    """directory: files modified more recently than this are retried later (half-written)."""
    max_delete_fraction: float = field(default=0.5, metadata={"above": 0.0, "max": 1.0})
    """A sync deleting more of the live nodes than this is held until confirmed (1.0: off)."""
    keep_deleted: int = field(default=10000, metadata=_min(0))
    """Activations of deleted or edited-away node versions kept, by content, for reuse (0: none)."""


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """`smollm2-135m` (bundled), a local Hugging Face model directory, or a hub id (owner/name)."""
    layers: list[int] = field(default_factory=list)
    """Decoder blocks whose output is read (0-based, negative from the end); empty: automatic."""
    dtype: ModelDtype = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU."""
    device: Device = "auto"
    """auto: cuda when a GPU is present."""
    max_tokens: int = field(default=512, metadata=_min(2))
    """Content longer than this many tokens is truncated (and counted)."""
    pooling: Pooling = "mean"
    """How a node's token activations become one vector per layer."""
    sink_norm_ratio: float = field(default=10.0, metadata=_min(1.0))
    """Mean pooling leaves out tokens whose norm exceeds this times the median norm."""
    batch_tokens: int = field(default=0, metadata=_min(0))
    """Token budget of one batch (padded length x batch size); 0: 1024 on CPU, 4096 on GPU."""
    batch_size: int = field(default=64, metadata=_min(1))
    """Upper bound on texts per batch, next to the token budget."""
    threads: int = field(default=0, metadata=_min(0))
    """CPU threads for torch; 0 leaves torch's default."""
    allow_download: bool = False
    """A Hugging Face id may be fetched from the hub; false: only the local hub cache is read."""
    cache_dir: str = ""
    """Shared cache of the converted bundled model; empty: $XDG_CACHE_HOME/amygdala-daemon."""


@dataclass
class VectorsConfig:
    method: Method = "diag_lda"
    """mean_diff (CAA), diag_lda, or the covariance-aware shrinkage_lda and score_ridge."""
    dtype: VectorsDtype = "float32"
    """dtype of the published tensors."""
    evaluation_sample: int = field(default=2000, metadata=_min(10))
    """Nodes sampled (lowest sha256 of id first) for calibration std and held-out AUROC."""
    evaluate_every: float = field(default=600.0, metadata=_min(0.0))
    """Seconds a publish may reuse the last sampled evaluation; 0: evaluate at every publish."""
    evaluate_after_changes: float = field(default=0.1, metadata=_min(0.0))
    """Evaluate again once ledger steps (an edit is two) exceed this share of eligible nodes."""
    covariance_max_hidden: int = field(default=1024, metadata=_min(1))
    """Covariance methods keep the exact co-moment matrix up to this hidden size."""
    covariance_sample: int = field(default=512, metadata=_min(2))
    """Above covariance_max_hidden: nodes (lowest sha256 of id first) that estimate it."""
    shrinkage: Shrinkage = "mean_eigenvalue"
    """Covariance methods solve against S + mean eigenvalue * I, or OAS's shrunk S (oas)."""


@dataclass
class LabelsConfig:
    min_positive_score: float = field(default=8.0, metadata={"min": 0.0, "max": 10.0})
    """A node is a positive for E when score(E) is at least this."""
    max_negative_score: float | None = field(default=None, metadata={"min": 0.0, "max": 10.0})
    """Unset: only untagged nodes are negatives; set: low scores count as negatives too."""
    max_negative_mentions: int = field(default=0, metadata=_min(0))
    """A negative for E may mention the word E at most this many times."""
    min_content_chars: int = field(default=40, metadata=_min(0))
    """Shorter content is not an example."""


@dataclass
class ConceptsConfig:
    min_positive: int = field(default=5, metadata=_min(1))
    """Fewest positives for a concept to be published."""
    min_negative: int = field(default=5, metadata=_min(1))
    """Fewest negatives for a concept to be published."""
    max_concepts: int = field(default=200, metadata=_min(1))
    """Most concepts published; the most frequent win."""
    max_tracked: int = field(default=2000, metadata=_min(1))
    """Most concepts the fold tracks; a node whose tags would add more is quarantined."""
    include: list[str] = field(default_factory=list)
    """Curated list: when non-empty, only these concepts are published."""
    exclude: list[str] = field(default_factory=list)
    """Concepts never published."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Tag names counted as another concept, e.g. love = "warmth" ([concepts.aliases])."""


@dataclass
class DaemonConfig:
    poll_interval: float = field(default=10.0, metadata=_min(0.01))
    """Seconds between polls of the source."""
    reconcile_interval: float = field(default=300.0, metadata=_min(1.0))
    """Seconds between full reconciles (catch deletes in sources without a change feed)."""
    checkpoint_interval: float = field(default=60.0, metadata=_min(0.1))
    """Seconds between accumulator checkpoints while the ledger moves."""


@dataclass
class PublishConfig:
    interval: str = "5m"
    """How often to publish: a duration (30s, 5m, 1h) or a 5-field cron expression."""
    keep: int = field(default=10, metadata=_min(1))
    """Generations kept for rollback."""
    vectors_path: str = ""
    """Optional flat copy of vectors.safetensors (for VLLM_READOUT_VECTORS), replaced by rename."""
    manifest_path: str = ""
    """Optional flat copy of manifest.json (for VLLM_READOUT_MANIFEST), replaced by rename."""
    publish_after_s: float = field(default=0.0, metadata=_min(0.0))
    """Debounce: publish this long after the last change (0: off)."""
    publish_after_changes: int = field(default=1, metadata=_min(1))
    """Debounce: only once this many changes have piled up."""


@dataclass
class NotifyConfig:
    command: list[str] = field(default_factory=list)
    """Run after each publish (argv), with AMYGDALA_GENERATION and friends in its environment."""
    url: str = ""
    """POST a JSON body here after each publish."""
    timeout_s: float = field(default=10.0, metadata=_min(0.1))
    """Each hook attempt is abandoned after this long."""
    retries: int = field(default=3, metadata=_min(0))
    """Extra attempts of the URL hook, with exponential backoff."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    """Websocket bind address; anything but loopback requires a token."""
    port: int = field(default=8765, metadata={"min": 0, "max": 65535})
    """Websocket port; 0 picks a free one."""
    token: str = ""
    """Shared secret clients send as `?token=` or an Authorization bearer (SIGHUP rotates it)."""
    allowed_origins: list[str] = field(default_factory=list)
    """Browser origins (scheme://host[:port]) let in; any other `Origin` header gets 403."""
    max_connections: int = field(default=64, metadata=_min(1))
    """Most websocket clients at once; more get 503 (kept well below the open-file limit)."""
    force_publish_interval: float = field(default=60.0, metadata=_min(0.0))
    """Seconds between forced publishes asked for over the websocket (0: no limit)."""
    publish_requests_per_minute: float = field(default=10.0, metadata=_min(0.0))
    """Publish requests let through per minute, all clients together, in bursts (0: no limit)."""


@dataclass
class Config:
    state_dir: str = "state"
    """Ledger, checkpoint, model cache and published generations live here."""
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def _type_name(annotation: Any) -> str:
    if annotation is float:
        return "a number"
    if annotation is int:
        return "an integer"
    if annotation is str or typing.get_origin(annotation) is Literal:
        return "a string"
    if annotation is bool:
        return "true or false"
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return f"a list of {_type_name(item).removeprefix('a ').removeprefix('an ')}s"
    return str(annotation)


def _coerce(key: str, value: Any, annotation: Any, metadata: Any) -> Any:
    """Check `value` against the field's type and limits; return it in the field's type."""
    if isinstance(annotation, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(key, value, inner[0], metadata)
    if typing.get_origin(annotation) is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table of names, got {value!r}")
        out: dict[str, str] = {}
        for name, target in value.items():
            for part in (name, target):
                if not isinstance(part, str) or not _TAG_NAME.fullmatch(part):
                    raise ConfigError(f"{key}.{name}", f"{part!r} is not a tag name")
            out[name.lower()] = target.lower()
        return out
    if typing.get_origin(annotation) is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {_type_name(annotation)}, got {value!r}")
        return [_coerce(key, item, item_type, {}) for item in value]
    if typing.get_origin(annotation) is Literal:
        return _choice(key, value, typing.get_args(annotation))
    # bool is an int in Python; a TOML `true` where a number is wanted is a mistake.
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is float and is_number:
        value = float(value)
        # TOML has nan and inf; no key means either, and nan passes every min/max check.
        if not math.isfinite(value):
            raise ConfigError(key, f"{value!r} is not a finite number")
    elif not (
        (annotation is int and is_number and isinstance(value, int))
        or (annotation is str and isinstance(value, str))
        or (annotation is bool and isinstance(value, bool))
    ):
        raise ConfigError(key, f"expected {_type_name(annotation)}, got {value!r}")
    if "min" in metadata and value < metadata["min"]:
        raise ConfigError(key, f"{value!r} is below the minimum {metadata['min']}")
    if "above" in metadata and value <= metadata["above"]:
        raise ConfigError(key, f"{value!r} must be above {metadata['above']}")
    if "max" in metadata and value > metadata["max"]:
        raise ConfigError(key, f"{value!r} is above the maximum {metadata['max']}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value` if it is one of a `Literal` field's `choices`."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ConfigError(key, f"{value!r} is not one of {accepted}")
    return value


def _build(cls: type[Any], table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            accepted = ", ".join(sorted(known))
            raise ConfigError(f"{prefix}{key}", f"unknown key (accepted: {accepted})")
    values: dict[str, Any] = {}
    for name, fld in known.items():
        if name not in table:
            continue
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(table[name], dict):
                raise ConfigError(f"{prefix}{name}", "expected a table")
            values[name] = _build(annotation, table[name], f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            values[name] = _coerce(f"{prefix}{name}", table[name], annotation, fld.metadata)
    return cls(**values)


def validate(config: Config) -> Config:
    """Checks that span several keys."""
    if config.server.host not in ("127.0.0.1", "localhost", "::1") and not config.server.token:
        raise ConfigError("server.token", f"binding {config.server.host!r} requires a token")
    parse_interval(config.publish.interval)
    labels = config.labels
    if labels.max_negative_score is not None and (
        labels.max_negative_score >= labels.min_positive_score
    ):
        raise ConfigError(
            "labels.max_negative_score",
            f"{labels.max_negative_score!r} must be below labels.min_positive_score "
            f"({labels.min_positive_score!r}): a node cannot be both positive and negative",
        )
    layers = config.model.layers
    twice = [layer for i, layer in enumerate(layers) if layer in layers[:i]]
    if twice:
        raise ConfigError("model.layers", f"layer {twice[0]} is listed twice")
    if config.source.kind == "mcp":
        _validate_mcp(config.source)
    return config


def _validate_mcp(source: SourceConfig) -> None:
    """The mcp source needs somewhere to connect and a tool mapping that parses."""
    if source.url and source.command:
        raise ConfigError("source.url", "give source.url or source.command, not both")
    if source.url and not re.match(r"https?://[^/\s]+", source.url):
        raise ConfigError("source.url", f"{source.url!r} is not an http:// or https:// URL")
    if source.args and not source.command:
        raise ConfigError("source.args", "arguments need a source.command to go with")
    chosen = effective(source)
    if not chosen.url and not chosen.command:
        raise ConfigError(
            "source.url",
            "the mcp source needs source.url (Streamable HTTP) or source.command (stdio), "
            "or a preset that brings its command",
        )
    try:
        tool_mapping(chosen)
    except MappingError as exc:
        raise ConfigError(exc.key or "source", exc.problem) from None


def from_dict(table: dict[str, Any]) -> Config:
    config: Config = _build(Config, table, "")
    return validate(config)
