"""The seed's two batch steps on the daemon's engine: extract training pairs, train vectors.

`extract_pairs` labels a memory graph exactly as the daemon's fold does (`labels.py`) and
writes a directory of examples:

    DIR/index.json                 counts per emotion and polarity, and the settings used
    DIR/<emotion>/positive.jsonl   one {"id", "text", "score"} object a line
    DIR/<emotion>/negative.jsonl

`train` reads such a directory (or one written by hand), runs each distinct text through the
model once, folds float64 Welford statistics per emotion and polarity, and writes the
published format. On the same graph and settings the vectors equal `rebuild`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.config import Config, LabelsConfig
from amygdala_daemon.errors import InputError
from amygdala_daemon.labels import KnownConcepts, is_eligible, label_node
from amygdala_daemon.publisher import replace_flat, write_file
from amygdala_daemon.sources import MemorySource, SourceNode
from amygdala_daemon.stats import Welford
from amygdala_daemon.tags import parse_text

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


def cap_key(node_id: str) -> str:
    """Where a node falls in the cap order: stable for a given id, unrelated to its content."""
    return hashlib.sha256(node_id.encode("utf-8")).hexdigest()


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
    ordered = sorted(examples, key=lambda e: (cap_key(e.id), e.id))
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


def _missing(counts: dict[str, int]) -> str | None:
    empty = [polarity for polarity in POLARITIES if counts[polarity] == 0]
    return f"no {' and no '.join(p + 's' for p in empty)}" if empty else None


@dataclass
class TrainResult:
    output: Path
    manifest_path: Path
    concepts: list[str]
    layers: list[int]
    skipped: dict[str, str] = field(default_factory=dict)
    examples: int = 0
    distinct_texts: int = 0
    forward_sequences: int = 0
    failed: list[str] = field(default_factory=list)
    stripped: int = 0


def _target_layers(layers: list[int], n_layers: int, flag: str) -> list[int]:
    """Checked here to name the flag in the message, resolved by the extractor's own rule."""
    from amygdala_daemon.extractor import default_layers, resolve_layers

    for layer in layers:
        if not -n_layers <= layer < n_layers:
            raise InputError(
                f"{flag}: layer {layer} is out of range for a model with {n_layers} decoder "
                f"blocks (accepted: {-n_layers}..{n_layers - 1})"
            )
    return resolve_layers(layers, n_layers) if layers else default_layers(n_layers)


Rows = dict[str, list[npt.NDArray[np.float32]]]


def _fold_emotion(
    rows: Rows, layers: list[int], method: str, evaluation_sample: int
) -> tuple[npt.NDArray[np.float64], dict[str, int], dict[str, dict[str, float]]]:
    """Unit direction, counts and calibration of one emotion, as the daemon computes them."""
    from amygdala_daemon.vectors import calibrate, direction

    stats = {p: Welford.empty(rows[p][0].shape) for p in POLARITIES}
    for polarity in POLARITIES:
        for row in rows[polarity]:
            stats[polarity].add(row)
    unit = direction(stats["positive"], stats["negative"], method)
    # Means are exact; the spread needs the projections themselves, on a bounded sample.
    spread = {}
    for polarity in POLARITIES:
        sample = np.stack(rows[polarity][:evaluation_sample]).astype(np.float64)
        projections = np.einsum("nlh,lh->nl", sample, unit)
        spread[polarity] = (
            projections.std(axis=0, ddof=1) if len(sample) > 1 else np.zeros(len(layers))
        )
    calibration = {
        str(layer): calibrate(
            unit[i],
            stats["positive"].mean[i],
            stats["negative"].mean[i],
            float(spread["positive"][i]),
            float(spread["negative"][i]),
        ).as_dict()
        for i, layer in enumerate(layers)
    }
    return unit, {"n_pos": stats["positive"].count, "n_neg": stats["negative"].count}, calibration


def _none_left(skipped: dict[str, str]) -> InputError:
    listed = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
    return InputError(f"no emotion has both positives and negatives ({listed})")


def train(
    config: Config,
    training_dir: Path,
    output: Path,
    manifest_path: Path | None = None,
    *,
    layers_flag: str = "config: model.layers",
    progress: ProgressFactory | None = None,
) -> TrainResult:
    """Vectors from a training directory, with the model, layers and batching of `config.model`.

    `layers_flag` names where the layers came from, for the out-of-range message.
    """
    from amygdala_daemon.extractor import Extractor, find_decoder_blocks
    from amygdala_daemon.models import load_model
    from amygdala_daemon.publisher import LAYER_CONVENTION, Release, serialize

    manifest_path = manifest_path or output.with_name("manifest.json")
    if manifest_path.resolve() == output.resolve():
        raise InputError(f"--manifest: {manifest_path} is the --output file")
    # Bad input fails here, before the model loads.
    training = read_training_dir(training_dir)
    skipped = {
        name: reason
        for name, texts in training.texts.items()
        if (reason := _missing({p: len(texts[p]) for p in POLARITIES}))
    }
    usable = [name for name in training.texts if name not in skipped]
    if not usable:
        raise _none_left(skipped)
    # Each distinct text goes through the model once, however many emotions list it.
    slot: dict[str, int] = {}
    for name in usable:
        for polarity in POLARITIES:
            for text in training.texts[name][polarity]:
                slot.setdefault(text, len(slot))
    texts = list(slot)

    model = config.model
    if model.threads:
        import torch

        torch.set_num_threads(model.threads)
    loaded = load_model(model, config.state_path)
    layers = _target_layers(model.layers, len(find_decoder_blocks(loaded.model)), layers_flag)
    extractor = Extractor(
        loaded.model,
        loaded.tokenizer,
        layers,
        pooling=model.pooling,
        sink_norm_ratio=model.sink_norm_ratio,
        max_tokens=model.max_tokens,
        batch_tokens=model.batch_tokens,
        batch_size=model.batch_size,
    )
    # Every pooled activation stays in memory ([distinct texts, layers, hidden] float32) until
    # the fold: calibration needs them again once the directions exist.
    bar = progress(len(texts), "extracting") if progress is not None else None
    try:
        extractions = extractor.extract(texts, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    failed = [f"{t[:60]!r}: {e.error}" for t, e in zip(texts, extractions, strict=True) if e.error]

    units: dict[str, npt.NDArray[np.float64]] = {}
    counts: dict[str, dict[str, int]] = {}
    calibration: dict[str, dict[str, dict[str, float]]] = {}
    for name in usable:
        # An example whose text failed extraction drops out, like a quarantined node.
        rows: Rows = {
            p: [
                a
                for t in training.texts[name][p]
                if (a := extractions[slot[t]].activations) is not None
            ]
            for p in POLARITIES
        }
        reason = _missing({p: len(rows[p]) for p in POLARITIES})
        if reason:
            skipped[name] = f"{reason} left after failed extractions"
            continue
        units[name], counts[name], calibration[name] = _fold_emotion(
            rows, layers, config.vectors.method, config.vectors.evaluation_sample
        )
    concepts = list(units)
    if not concepts:
        raise _none_left(skipped)
    skipped = dict(sorted(skipped.items()))
    manifest: dict[str, Any] = {
        "format": "amygdala-readout/1",
        "source": "train",
        "training_data": str(training_dir),
        "concepts": concepts,
        "layers": layers,
        "model_id": loaded.model_id,
        "model_revision": loaded.revision,
        "model_dtype": str(loaded.dtype).removeprefix("torch."),
        "hidden_size": extractor.hidden_size,
        "dtype": config.vectors.dtype,
        "layer_convention": LAYER_CONVENTION,
        "method": config.vectors.method,
        "pooling": model.pooling,
        # Not a daemon generation: those count from 1.
        "generation": 0,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": counts,
        "unpublished": skipped,
        "calibration": calibration,
    }
    vectors = {
        layer: np.stack([units[name][i] for name in concepts]) for i, layer in enumerate(layers)
    }
    vectors_bytes, manifest_bytes = serialize(Release(vectors, manifest), config.vectors.dtype)
    replace_flat(output, vectors_bytes)
    replace_flat(manifest_path, manifest_bytes)
    return TrainResult(
        output=output,
        manifest_path=manifest_path,
        concepts=concepts,
        layers=layers,
        skipped=skipped,
        examples=sum(c["n_pos"] + c["n_neg"] for c in counts.values()),
        distinct_texts=len(texts),
        forward_sequences=extractor.counters.sequences,
        failed=failed,
        stripped=training.stripped,
    )
