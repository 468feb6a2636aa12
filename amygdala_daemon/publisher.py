"""Publishing: vectors and manifest into a new generation directory, swapped in atomically.

Layout under `<state_dir>/published/`:

    gen-000007/vectors.safetensors   one `layer_<idx>.vectors` tensor per layer, manifest embedded
    gen-000007/manifest.json
    current -> gen-000007            swapped by rename of a fresh symlink (atomic)

Flat copies for vLLM are replaced by rename too, never written in place: a reader that has
the old inode mmapped keeps a valid file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.accumulators import Accumulators
from amygdala_daemon.concepts import select_concepts
from amygdala_daemon.config import Config
from amygdala_daemon.errors import InputError
from amygdala_daemon.evaluation import evaluate, evaluation_due
from amygdala_daemon.ledger import Ledger
from amygdala_daemon.quality import HELD_OUT_SCHEME, quality_summary
from amygdala_daemon.vectors import calibrate, direction

LAYER_CONVENTION = (
    "block_output: layer i is the output of decoder block i (0-based), i.e. Hugging Face "
    "hidden_states[i + 1] and vLLM hidden_states + residual after layer i"
)
VECTORS_FILE = "vectors.safetensors"
MANIFEST_FILE = "manifest.json"
_GENERATION = re.compile(r"^gen-(\d{6,})$")


@dataclass(frozen=True)
class ModelInfo:
    """Where the activations came from; recorded in the ledger and every manifest."""

    model_id: str
    revision: str
    layers: list[int]
    hidden_size: int
    n_layers: int
    pooling: str
    sink_norm_ratio: float
    max_tokens: int

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Release:
    """A generation ready to be written."""

    vectors: dict[int, npt.NDArray[np.float64]]
    manifest: dict[str, Any]


def layer_key(layer: int) -> str:
    return f"layer_{layer}.vectors"


def settings_fingerprint(config: Config, model: ModelInfo) -> str:
    """Everything besides the ledger that shapes the vectors; unchanged means skip."""
    payload = {
        "labels": asdict(config.labels),
        "concepts": asdict(config.concepts),
        "vectors": asdict(config.vectors),
        "model": asdict(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# -- reading ----------------------------------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return loaded


def current_manifest(published: Path) -> dict[str, Any] | None:
    return read_manifest(published / "current")


def generations(published: Path) -> list[int]:
    if not published.is_dir():
        return []
    found = (_GENERATION.match(p.name) for p in published.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def generation_dir(published: Path, generation: int) -> Path:
    return published / f"gen-{generation:06d}"


# -- building ---------------------------------------------------------------------------


def _previous_vectors(published: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Per concept `[n_layers, hidden]` from the current generation, for stale rows."""
    manifest = current_manifest(published)
    if manifest is None:
        return {}
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(published / "current" / VECTORS_FILE))
    except (OSError, ValueError):
        return {}
    layers = manifest["layers"]
    out = {}
    for row, name in enumerate(manifest["concepts"]):
        out[name] = np.stack(
            [tensors[layer_key(layer)][row].astype(np.float64) for layer in layers]
        )
    return out


def build_release(
    fold: Accumulators,
    ledger: Ledger,
    config: Config,
    model: ModelInfo,
    published: Path,
    generation: int,
    previous: dict[str, Any] | None = None,
    force_evaluation: bool = False,
) -> Release:
    """Directions, counts and calibration for every published concept.

    Directions and calibration means are exact, from the fold. The sampled figures
    (projection spreads, held-out quality) are measured again when `evaluation_due` says so
    or when forced; otherwise they are carried over from `previous`, the newest manifest.
    """
    counts = {c.name: (c.n_pos, c.n_neg) for c in fold.counts()}
    selection = select_concepts(counts, ledger.registry(), config.concepts)
    ledger.register(selection.rows)
    units: dict[str, npt.NDArray[np.float64]] = {}
    stale: list[str] = []
    previous_vectors: dict[str, npt.NDArray[np.float64]] | None = None
    negatives = {name: fold.negatives(name) for name in selection.rows if name in fold.positive}
    for name in selection.rows:
        n_pos, n_neg = counts.get(name, (0, 0))
        if n_pos > 0 and n_neg > 0:
            units[name] = direction(fold.positive[name], negatives[name], config.vectors.method)
            continue
        # A published concept keeps its row; with no data left, it keeps its last vector.
        if previous_vectors is None:
            previous_vectors = _previous_vectors(published)
        units[name] = previous_vectors.get(name, np.zeros(fold.shape))
        stale.append(name)
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": "amygdala-readout/1",
        "concepts": selection.rows,
        "layers": model.layers,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "hidden_size": model.hidden_size,
        "dtype": config.vectors.dtype,
        "layer_convention": LAYER_CONVENTION,
        "method": config.vectors.method,
        "pooling": model.pooling,
        "generation": generation,
        "ledger_seq": fold.ledger_seq,
        "created_at": now.isoformat(timespec="seconds"),
        "counts": {
            name: {"n_pos": counts.get(name, (0, 0))[0], "n_neg": counts.get(name, (0, 0))[1]}
            for name in selection.rows
        },
        "stale": stale,
        "unpublished": selection.unpublished,
        "settings_fingerprint": settings_fingerprint(config, model),
        "registry_epoch": ledger.get_meta("registry_epoch") or "0",
    }
    reason = (
        "forced"
        if force_evaluation
        else evaluation_due(previous, manifest, fold.total.count, config.vectors, now)
    )
    if reason is not None or previous is None:  # (evaluation_due is never None without one)
        sampled = _measure(fold, ledger, config, model, selection.rows, units)
        sampled["evaluation"] = {
            "ledger_seq": fold.ledger_seq,
            "at": manifest["created_at"],
            "reason": reason,
            "sampled_nodes": sampled.pop("sampled_nodes"),
        }
    else:
        sampled = _carried_over(previous, selection.rows, model.layers)
    calibration: dict[str, dict[str, dict[str, float]]] = {}
    zeros = np.zeros(fold.shape)
    for row, name in enumerate(selection.rows):
        has_data = name in fold.positive and name not in stale
        pos_means = fold.positive[name].mean if has_data else zeros
        neg_means = negatives[name].mean if has_data else zeros
        calibration[name] = {
            str(layer): calibrate(
                units[name][i],
                pos_means[i],
                neg_means[i],
                sampled["pos_std"][row][i],
                sampled["neg_std"][row][i],
            ).as_dict()
            for i, layer in enumerate(model.layers)
        }
    manifest["calibration"] = calibration
    # Held-out AUROC per concept and layer, so a consumer can hide weak concepts.
    manifest["quality"] = sampled["quality"]
    manifest["evaluation"] = sampled["evaluation"]
    vectors = {
        layer: np.stack([units[name][i] for name in selection.rows])
        if selection.rows
        else np.zeros((0, model.hidden_size))
        for i, layer in enumerate(model.layers)
    }
    return Release(vectors=vectors, manifest=manifest)


def _measure(
    fold: Accumulators,
    ledger: Ledger,
    config: Config,
    model: ModelInfo,
    rows: list[str],
    units: dict[str, npt.NDArray[np.float64]],
) -> dict[str, Any]:
    """Spreads along the new units and held-out quality, from one sample of the ledger."""
    stacked = np.stack([units[name] for name in rows]) if rows else None
    measured = evaluate(
        fold, ledger, rows, config.vectors.method, config.vectors.evaluation_sample, stacked
    )
    return {
        "pos_std": measured.pos_std.tolist(),
        "neg_std": measured.neg_std.tolist(),
        "quality": quality_summary(measured.scores, rows, model.layers),
        "sampled_nodes": measured.sampled,
    }


def _carried_over(previous: dict[str, Any], rows: list[str], layers: list[int]) -> dict[str, Any]:
    """The sampled figures of the newest generation, for the same concepts and layers."""
    calibration, quality = previous["calibration"], previous["quality"]

    def spread(key: str) -> list[list[float]]:
        return [[calibration[name][str(layer)][key] for layer in layers] for name in rows]

    return {
        "pos_std": spread("pos_std"),
        "neg_std": spread("neg_std"),
        "quality": {
            "held_out": HELD_OUT_SCHEME,
            "auroc": {name: quality["auroc"][name] for name in rows},
            "cohens_d": {name: quality["cohens_d"][name] for name in rows},
        },
        "evaluation": previous["evaluation"],
    }


# -- writing ----------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o644)


def replace_flat(target: Path, data: bytes) -> None:
    """Write beside `target`, then rename over it: never an in-place write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    write_file(temp, data)
    os.replace(temp, target)
    fsync_dir(target.parent)


def serialize(release: Release, dtype: str) -> tuple[bytes, bytes]:
    """The safetensors bytes (manifest embedded) and the manifest.json bytes."""
    import torch
    from safetensors.torch import save

    manifest_text = json.dumps(release.manifest, indent=2, sort_keys=True)
    torch_dtype = getattr(torch, dtype)
    tensors = {
        layer_key(layer): torch.from_numpy(np.ascontiguousarray(rows, np.float32)).to(torch_dtype)
        for layer, rows in release.vectors.items()
    }
    vectors = save(tensors, metadata={"manifest": manifest_text})
    return vectors, (manifest_text + "\n").encode()


def swap_current(published: Path, generation: int) -> None:
    """Point `current` at a generation: a new symlink renamed over the old one."""
    link = published / f".current.tmp-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(generation_dir(published, generation).name, link)
    os.replace(link, published / "current")
    fsync_dir(published)


def write_generation(
    release: Release,
    published: Path,
    dtype: str,
    keep: int,
    vectors_path: str = "",
    manifest_path: str = "",
) -> Path:
    """Write, fsync, swap `current`, refresh flat copies, prune old generations."""
    generation = int(release.manifest["generation"])
    published.mkdir(parents=True, exist_ok=True)
    final = generation_dir(published, generation)
    partial = published / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    vectors, manifest = serialize(release, dtype)
    write_file(partial / VECTORS_FILE, vectors)
    write_file(partial / MANIFEST_FILE, manifest)
    os.chmod(partial, 0o755)
    fsync_dir(partial)
    os.replace(partial, final)
    fsync_dir(published)
    swap_current(published, generation)
    if vectors_path:
        replace_flat(Path(vectors_path), vectors)
    if manifest_path:
        replace_flat(Path(manifest_path), manifest)
    prune(published, keep)
    return final


def prune(published: Path, keep: int) -> list[int]:
    """Remove all but the newest `keep` generations; never the one `current` points to."""
    current = (
        os.path.basename(os.readlink(published / "current"))
        if (published / "current").is_symlink()
        else ""
    )
    removed = []
    for generation in generations(published)[:-keep]:
        path = generation_dir(published, generation)
        if path.name != current:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(generation)
    for leftover in published.glob(".*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def rollback(
    published: Path, generation: int | None, vectors_path: str = "", manifest_path: str = ""
) -> int:
    """Point `current` at `generation`, or at the one before the current one.

    The flat copies, when configured, are replaced by the chosen generation's files too.
    """
    available = generations(published)
    manifest = current_manifest(published)
    if generation is None:
        now = int(manifest["generation"]) if manifest else None
        older = [g for g in available if now is None or g < now]
        if not older:
            raise InputError("rollback: there is no earlier generation to go back to")
        generation = older[-1]
    if generation not in available:
        listed = ", ".join(str(g) for g in available) or "none"
        raise InputError(f"rollback: generation {generation} does not exist (kept: {listed})")
    swap_current(published, generation)
    chosen = generation_dir(published, generation)
    if vectors_path:
        replace_flat(Path(vectors_path), (chosen / VECTORS_FILE).read_bytes())
    if manifest_path:
        replace_flat(Path(manifest_path), (chosen / MANIFEST_FILE).read_bytes())
    return generation
