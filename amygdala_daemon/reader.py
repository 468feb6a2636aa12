"""The consumer side: load published readout vectors and follow new generations safely.

Dependency-light on purpose (numpy and safetensors; torch only for bfloat16 files), so a vLLM
readout manager can import it without the rest of the daemon:

    from amygdala_daemon.reader import ReadoutWatcher

    watcher = ReadoutWatcher(os.environ["VLLM_READOUT_VECTORS"])
    ...
    readout = watcher.poll()          # cheap; returns the last good generation
    rows = readout.vectors[layer]     # [n_concepts, hidden], row i is readout.concepts[i]
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.manifest import VECTORS_FILE, Manifest, layer_key, parse_manifest

log = logging.getLogger(__name__)

# bfloat16 and float16 rows are unit norm only to their precision.
NORM_TOLERANCE = 1e-2


class ReadoutError(Exception):
    """A readout file that is missing, torn, or disagrees with its manifest."""


class ManifestLagError(ReadoutError):
    """The separate manifest file names another generation than the vectors file."""


@dataclass(frozen=True)
class Readout:
    """One generation's vectors, checked against the manifest embedded in the same file."""

    vectors: dict[int, npt.NDArray[np.float32]]
    concepts: list[str]
    layers: list[int]
    generation: int | None
    manifest: Manifest = field(repr=False)
    path: str = ""


def _vectors_path(path: str | os.PathLike[str]) -> Path:
    candidate = Path(path)
    return candidate / VECTORS_FILE if candidate.is_dir() else candidate


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ReadoutError("file is too short to be safetensors")
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        raise ReadoutError("safetensors header runs past the end of the file (truncated?)")
    try:
        header: dict[str, Any] = json.loads(data[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReadoutError("safetensors header is not valid JSON") from None
    return header


def _tensors(data: bytes, header: dict[str, Any]) -> dict[str, npt.NDArray[np.float32]]:
    dtypes = {entry.get("dtype") for key, entry in header.items() if key != "__metadata__"}
    try:
        if "BF16" in dtypes:
            from safetensors.torch import load as load_torch

            return {k: v.float().numpy() for k, v in load_torch(data).items()}
        from safetensors.numpy import load as load_numpy

        return {k: v.astype(np.float32, copy=False) for k, v in load_numpy(data).items()}
    except Exception as exc:  # safetensors raises its own error types on torn files
        raise ReadoutError(f"tensors do not load: {exc}") from None


def load_readout(
    path: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None
) -> Readout:
    """Load and check a `vectors.safetensors` (or a generation directory holding one).

    The file is read once, so the tensors and the embedded manifest come from the same
    bytes. Raises `ReadoutError` when anything disagrees: keys, shapes, concept count,
    non-unit rows, or a `manifest_path` that names another generation.
    """
    vectors_path = _vectors_path(path)
    try:
        with open(vectors_path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ReadoutError(f"cannot read {vectors_path}: {exc.strerror}") from None
    header = _header(data)
    try:
        manifest = parse_manifest(json.loads(header["__metadata__"]["manifest"]))
        concepts = [str(c) for c in manifest["concepts"]]
        layers = [int(layer) for layer in manifest["layers"]]
        hidden = int(manifest["hidden_size"])
    except (KeyError, TypeError, ValueError):
        raise ReadoutError("the embedded manifest is missing or incomplete") from None
    tensors = _tensors(data, header)
    expected = {layer_key(layer) for layer in layers}
    if set(tensors) != expected:
        raise ReadoutError(f"tensor keys {sorted(tensors)} do not match layers {layers}")
    vectors: dict[int, npt.NDArray[np.float32]] = {}
    for layer in layers:
        rows = tensors[layer_key(layer)]
        if rows.shape != (len(concepts), hidden):
            raise ReadoutError(
                f"layer {layer} has shape {list(rows.shape)}, the manifest says "
                f"[{len(concepts)}, {hidden}]"
            )
        norms = np.linalg.norm(rows, axis=1)
        if rows.size and not np.all(np.abs(norms - 1.0) < NORM_TOLERANCE):
            raise ReadoutError(f"layer {layer} has rows that are not unit norm")
        vectors[layer] = rows
    if manifest_path is not None:
        try:
            flat = json.loads(Path(manifest_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReadoutError(f"cannot read manifest {manifest_path}: {exc}") from None
        if flat.get("generation") != manifest.get("generation") or flat.get("concepts") != concepts:
            raise ManifestLagError(
                f"{manifest_path} is generation {flat.get('generation')}, the vectors are "
                f"generation {manifest.get('generation')}"
            )
    generation = manifest.get("generation")
    return Readout(
        vectors=vectors,
        concepts=concepts,
        layers=layers,
        generation=None if generation is None else int(generation),
        manifest=manifest,
        path=str(vectors_path),
    )


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)  # follows the `current` symlink: a new generation is a new inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class ReadoutWatcher:
    """Follows a readout path and keeps serving the last good generation.

    `poll()` costs one `os.stat` per file when `min_interval` has passed, and a clock read
    otherwise (measured in BENCHMARKS.md). A changed file is loaded completely and checked
    before it replaces the current readout; a corrupt or inconsistent one is logged and
    skipped until the file changes again.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        manifest_path: str | os.PathLike[str] | None = None,
        min_interval: float = 0.0,
    ) -> None:
        self.path = _vectors_path(path)
        self.manifest_path = Path(manifest_path) if manifest_path is not None else None
        self.min_interval = min_interval
        self.current: Readout | None = None
        self.last_error: str | None = None
        self._seen: tuple[Any, ...] | None = None
        self._next_check = 0.0
        self.poll()

    def _stamps(self) -> tuple[Any, ...]:
        stamps: tuple[Any, ...] = (_stamp(self.path),)
        if self.manifest_path is not None:
            stamps += (_stamp(self.manifest_path),)
        return stamps

    def poll(self) -> Readout | None:
        """The newest good generation (None until one loads)."""
        if self.min_interval:
            now = time.monotonic()
            if now < self._next_check:
                return self.current
            self._next_check = now + self.min_interval
        stamps = self._stamps()
        if stamps == self._seen:
            return self.current
        self._seen = stamps
        try:
            readout = load_readout(self.path, self.manifest_path)
        except ManifestLagError as exc:
            # The two flat files are renamed one after the other; a reader can land between
            # the two renames. Not an error: keep serving, look again on the next poll.
            self._seen = None
            log.debug("flat manifest not caught up yet: %s", exc)
            return self.current
        except ReadoutError as exc:
            self.last_error = str(exc)
            log.warning(
                "keeping generation %s: new readout rejected: %s",
                self.current.generation if self.current else None,
                exc,
            )
            return self.current
        self.current, self.last_error = readout, None
        return readout
