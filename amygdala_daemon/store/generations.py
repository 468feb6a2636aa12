"""Generation directories on disk: written, fsynced, swapped in atomically, pruned, rolled back.

Layout under `<state_dir>/published/`:

    gen-000007/vectors.safetensors   one `layer_<idx>.vectors` tensor per layer, manifest embedded
    gen-000007/manifest.json
    current -> gen-000007            swapped by rename of a fresh symlink (atomic)

Flat copies for vLLM are replaced by rename too, never written in place: a reader that has
the old inode mmapped keeps a valid file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.manifest import (
    MANIFEST_FILE,
    VECTORS_FILE,
    Manifest,
    Release,
    layer_key,
    manifest_json,
    parse_manifest,
)
from amygdala_daemon.store.atomic import fsync_dir, replace_file, write_file

_GENERATION = re.compile(r"^gen-(\d{6,})$")
# As the reader allows: float16 and bfloat16 rows are unit norm only to their precision.
UNIT_TOLERANCE = 1e-2


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of a generation directory; None when missing or unreadable."""
    try:
        return parse_manifest(json.loads((directory / MANIFEST_FILE).read_text()))
    except (OSError, ValueError):
        return None


def current_manifest(published: Path) -> Manifest | None:
    return read_manifest(published / "current")


def newest_manifest(published: Path) -> Manifest | None:
    """The manifest of the newest generation (not `current`: after a rollback they differ)."""
    newest = max(generations(published), default=None)
    return None if newest is None else read_manifest(generation_dir(published, newest))


def generations(published: Path) -> list[int]:
    if not published.is_dir():
        return []
    found = (_GENERATION.match(p.name) for p in published.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def generation_dir(published: Path, generation: int) -> Path:
    return published / f"gen-{generation:06d}"


def last_vectors(
    published: Path, concepts: Iterable[str], registry_epoch: str, layers: list[int], hidden: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Each concept's newest published vector `[n_layers, hidden]`, from any kept generation.

    Generations are searched newest first, not only `current`: after a rollback `current`
    may predate the concept. Only generations of this registry epoch, these layers and this
    width count (a rebuild may have renumbered the rows, or changed the model), and only
    rows that are unit norm at every layer.
    """
    wanted = set(concepts)
    found: dict[str, npt.NDArray[np.float64]] = {}
    for generation in reversed(generations(published)):
        if wanted <= found.keys():
            break
        directory = generation_dir(published, generation)
        manifest = read_manifest(directory)
        if (
            manifest is None
            or manifest.get("registry_epoch") != registry_epoch
            or manifest["layers"] != layers
            or manifest["hidden_size"] != hidden
        ):
            continue
        rows = {
            name: row
            for row, name in enumerate(manifest["concepts"])
            if name in wanted and name not in found
        }
        if rows:
            found.update(_rows(directory, rows, layers))
    return found


def _rows(
    directory: Path, rows: dict[str, int], layers: list[int]
) -> dict[str, npt.NDArray[np.float64]]:
    """The named rows of a generation's vectors; {} when the file is unreadable."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(directory / VECTORS_FILE))
        stacked = {
            name: np.stack([tensors[layer_key(layer)][row].float().numpy() for layer in layers])
            for name, row in rows.items()
        }
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    kept = {}
    for name, vector in stacked.items():
        norms = np.linalg.norm(vector.astype(np.float64), axis=1, keepdims=True)
        # float16 and bfloat16 rows are unit norm to their precision only: normalize again.
        if np.all(np.isfinite(norms)) and np.all(np.abs(norms - 1.0) < UNIT_TOLERANCE):
            kept[name] = vector.astype(np.float64) / norms
    return kept


def serialize(release: Release, dtype: str) -> tuple[bytes, bytes]:
    """The safetensors bytes (manifest embedded) and the manifest.json bytes."""
    import torch
    from safetensors.torch import save

    manifest_text = manifest_json(release.manifest)
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
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write, fsync, swap `current`, refresh flat copies, prune old generations.

    `verify` is called on the complete directory before it gets its generation's name; if
    it raises, the directory is removed and `current` stays what it was.
    """
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
    if verify is not None:
        try:
            verify(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    os.replace(partial, final)
    fsync_dir(published)
    swap_current(published, generation)
    if vectors_path:
        replace_file(Path(vectors_path), vectors)
    if manifest_path:
        replace_file(Path(manifest_path), manifest)
    prune(published, keep)
    return final


def repair_flat_copies(
    published: Path, vectors_path: str = "", manifest_path: str = ""
) -> list[Path]:
    """Make the flat copies `current`'s files again where they are not; the ones rewritten.

    They are renamed into place one after the other, so a crash between the two renames
    leaves them a generation apart, and a reader that checks one against the other refuses
    the pair until they agree again.
    """
    repaired = []
    for flat, name in ((vectors_path, VECTORS_FILE), (manifest_path, MANIFEST_FILE)):
        if not flat:
            continue
        try:
            wanted = (published / "current" / name).read_bytes()
        except OSError:
            break  # nothing published yet, or `current` is broken: nothing to copy
        target = Path(flat)
        if not _holds(target, wanted):
            replace_file(target, wanted)
            repaired.append(target)
    return repaired


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


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
        replace_file(Path(vectors_path), (chosen / VECTORS_FILE).read_bytes())
    if manifest_path:
        replace_file(Path(manifest_path), (chosen / MANIFEST_FILE).read_bytes())
    return generation
