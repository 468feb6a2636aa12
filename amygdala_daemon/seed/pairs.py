"""The training-pairs directory: written from a memory graph, read back for `train`.

`extract_pairs` labels a memory graph exactly as the daemon's fold does (`labels.py`) and
writes a directory of examples:

    DIR/index.json                 counts per emotion and polarity, and the settings used
    DIR/<emotion>/positive.jsonl   one {"id", "text", "score"} object a line
    DIR/<emotion>/negative.jsonl

`read_training_dir` reads such a directory, or one written by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from amygdala_daemon.core.config import LabelsConfig
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.labels import KnownConcepts, is_eligible, label_node
from amygdala_daemon.core.sampling import sample_key
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.sources import MemorySource, SourceNode
from amygdala_daemon.store.atomic import write_file

PAIRS_FORMAT = "amygdala-pairs/1"
INDEX_FILE = "index.json"
POLARITIES = ("positive", "negative")
CAP_ORDER = "ascending sha256 of the node id"
ProgressFactory = Callable[[int, str], Any]
Pairs = dict[str, dict[str, list["Example"]]]


# -- extract-pairs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One training line: a node's content (tag lines removed) and its score for the emotion."""

    id: str
    text: str
    score: float | None

    def to_line(self) -> str:
        record = {"id": self.id, "text": self.text, "score": self.score}
        return json.dumps(record, ensure_ascii=False) + "\n"


def collect_pairs(
    nodes: Iterable[SourceNode], labels: LabelsConfig, aliases: dict[str, str] | None = None
) -> tuple[Pairs, int]:
    """Every emotion's positives and negatives, labeled as the daemon's fold labels them.

    Emotions are the tag names seen on eligible nodes, which is what the fold knows after
    a rebuild. Returns the pairs and the number of eligible nodes.
    """
    eligible = []
    for node in sorted(nodes, key=lambda n: n.id):
        parsed = parse_text(node.text, aliases)
        if is_eligible(parsed.tags, parsed.content, labels):
            eligible.append((node.id, parsed))
    known = KnownConcepts(name for _, parsed in eligible for name in parsed.tags)
    pairs: Pairs = {name: {"positive": [], "negative": []} for name in sorted(known.names)}
    for node_id, parsed in eligible:
        node_labels = label_node(parsed.tags, parsed.content, known, labels)
        # O(nodes x emotions), unlike the fold: the files list every negative anyway.
        for name, examples in pairs.items():
            example = Example(node_id, parsed.content, parsed.tags.get(name))
            if name in node_labels.positive:
                examples["positive"].append(example)
            if name not in node_labels.excluded_from_negatives:
                examples["negative"].append(example)
    return pairs, len(eligible)


def cap_examples(examples: list[Example], limit: int | None) -> list[Example]:
    """All examples in cap order, or the first `limit` of them."""
    ordered = sorted(examples, key=lambda e: (sample_key(e.id), e.id))
    return ordered if limit is None else ordered[:limit]


@dataclass
class PairsResult:
    output_dir: Path
    counts: dict[str, dict[str, int]]
    skipped: dict[str, str]
    nodes: int
    eligible: int
    problems: list[str]


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output-dir: {output_dir} exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / INDEX_FILE).exists():
        # Replacing the directory removes what is in it: only ever our own output.
        raise InputError(
            f"--output-dir: {output_dir} is not empty and holds no {INDEX_FILE}; "
            "give a new or empty directory, or an earlier extract-pairs output"
        )


def _replace_dir(built: Path, output_dir: Path) -> None:
    """Put `built` where `output_dir` is: a reader sees the old set or the new, never a mix.

    Between the two renames the directory is briefly absent; a crash there leaves the old
    set beside it as `.<name>.old-<pid>`.
    """
    if not output_dir.exists():
        os.replace(built, output_dir)
        return
    old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
    os.replace(output_dir, old)
    os.replace(built, output_dir)
    shutil.rmtree(old, ignore_errors=True)


def extract_pairs(
    source: MemorySource,
    output_dir: Path,
    labels: LabelsConfig,
    max_examples: int | None = None,
    aliases: dict[str, str] | None = None,
) -> PairsResult:
    """Label the graph and write the examples directory; the same graph gives the same bytes."""
    _check_output_dir(output_dir)
    snapshot = source.snapshot()
    pairs, eligible = collect_pairs(snapshot.nodes.values(), labels, aliases)
    counts: dict[str, dict[str, int]] = {}
    skipped: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, examples in pairs.items():
        if not examples["positive"]:
            skipped[name] = f"no positives (no score >= {labels.min_positive_score:g})"
            continue
        counts[name] = {}
        for polarity in POLARITIES:
            kept = cap_examples(examples[polarity], max_examples)
            counts[name][polarity] = len(kept)
            counts[name][f"{polarity}_available"] = len(examples[polarity])
            files[f"{name}/{polarity}.jsonl"] = "".join(e.to_line() for e in kept).encode()
    index = {
        "format": PAIRS_FORMAT,
        "source": source.describe(),
        "settings": {
            **asdict(labels),
            "max_examples_per_emotion": max_examples,
            "cap_order": CAP_ORDER,
        },
        "nodes": {
            "read": len(snapshot.nodes),
            "rejected": len(snapshot.rejected),
            "eligible": eligible,
        },
        "emotions": counts,
        "skipped": skipped,
    }
    # No timestamp: two runs on the same graph must give byte-identical files.
    files[INDEX_FILE] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        for relative, data in files.items():
            (built / relative).parent.mkdir(exist_ok=True)
            write_file(built / relative, data)
        for directory in (built, *(p for p in built.iterdir() if p.is_dir())):
            os.chmod(directory, 0o755)
        _replace_dir(built, output_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    problems = list(snapshot.problems)
    if snapshot.pending:
        # A batch must not pass over nodes silently: say which were still being written.
        listed = ", ".join(sorted(snapshot.pending)[:5])
        problems.append(f"{len(snapshot.pending)} node(s) still being written, left out: {listed}")
    return PairsResult(output_dir, counts, skipped, len(snapshot.nodes), eligible, problems)


# -- train ------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """Texts per emotion and polarity, as read from a training directory."""

    texts: dict[str, dict[str, list[str]]]
    stripped: int = 0
    """Examples whose trailing tag lines were removed before the model saw them."""


def _read_examples(path: Path) -> tuple[list[str], int]:
    try:
        # split("\n"), not splitlines(): a JSON string may hold a raw U+2028.
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    texts: list[str] = []
    stripped = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'{path}:{number}: expected an object with a string "text"')
        # A hand-written set may keep its tag lines; the model must never see them.
        content = parse_text(record["text"]).content
        if not content:
            raise InputError(f"{path}:{number}: the text is empty once tag lines are removed")
        stripped += content != record["text"].strip()
        texts.append(content)
    return texts, stripped


def read_training_dir(directory: Path) -> TrainingSet:
    """Every `<emotion>/{positive,negative}.jsonl` under `directory`, emotions sorted."""
    if not directory.is_dir():
        raise InputError(f"--training-data-dir: {directory} is not a directory")
    training = TrainingSet(texts={})
    for folder in sorted(directory.iterdir()):
        paths = {polarity: folder / f"{polarity}.jsonl" for polarity in POLARITIES}
        if folder.name.startswith(".") or not any(p.is_file() for p in paths.values()):
            continue
        training.texts[folder.name] = {}
        for polarity, path in paths.items():
            texts, stripped = _read_examples(path) if path.is_file() else ([], 0)
            training.texts[folder.name][polarity] = texts
            training.stripped += stripped
    if not training.texts:
        raise InputError(
            f"--training-data-dir: {directory} holds no examples; expected "
            "<emotion>/positive.jsonl and <emotion>/negative.jsonl (see extract-pairs)"
        )
    return training
