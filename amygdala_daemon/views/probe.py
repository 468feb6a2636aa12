"""Project text onto the current published vectors: raw dot products and calibrated z-scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.manifest import VECTORS_FILE, Manifest, PerLayer, layer_key
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.core.vectors import z_score
from amygdala_daemon.model.extractor import Extractor
from amygdala_daemon.model.loading import load_model
from amygdala_daemon.store.generations import read_manifest


@dataclass(frozen=True)
class Published:
    """The current generation, read once: its manifest and unit vectors per layer, float64."""

    manifest: Manifest
    vectors: dict[int, npt.NDArray[np.float64]]
    """layer -> `[n_concepts, hidden]`, rows in `manifest["concepts"]` order."""

    @property
    def concepts(self) -> list[str]:
        return self.manifest["concepts"]

    @property
    def layers(self) -> list[int]:
        return self.manifest["layers"]

    def z(self, concept: str, layer: int, projection: float) -> float:
        return z_score(projection, self.manifest["calibration"][concept][str(layer)])

    def project(self, activations: npt.NDArray[np.floating]) -> tuple[PerLayer, PerLayer]:
        """Raw projections and z-scores, concept -> layer -> value, of `[n_layers, hidden]`."""
        projections: PerLayer = {c: {} for c in self.concepts}
        zs: PerLayer = {c: {} for c in self.concepts}
        for i, layer in enumerate(self.layers):
            values = self.vectors[layer] @ activations[i].astype(np.float64)
            for concept, value in zip(self.concepts, values, strict=True):
                projections[concept][str(layer)] = float(value)
                zs[concept][str(layer)] = self.z(concept, layer, float(value))
        return projections, zs


def read_published(config: Config, command: str = "probe") -> Published:
    """The current generation's manifest and vectors; no model is loaded."""
    published = StatePaths(config.state_path).published
    # Resolved once: a publish that swaps `current` between the two reads must not pair one
    # generation's manifest with another's vectors.
    directory = (published / "current").resolve()
    manifest = read_manifest(directory)
    if manifest is None:
        raise AmygdalaError(
            f"{command}: no published generation under {published}; run rebuild first"
        )
    from safetensors.numpy import load_file

    tensors = load_file(str(directory / VECTORS_FILE))
    vectors = {layer: tensors[layer_key(layer)].astype(np.float64) for layer in manifest["layers"]}
    return Published(manifest, vectors)


def open_extractor(config: Config, published: Published, command: str = "probe") -> Extractor:
    """The model, hooked at the published layers and pooling as the vectors' examples were."""
    loaded = load_model(config.model, config.state_path)
    if int(loaded.model.config.hidden_size) != published.manifest["hidden_size"]:
        raise InputError(
            f"{command}: model.name {config.model.name!r} has hidden size "
            f"{loaded.model.config.hidden_size}, the vectors have "
            f"{published.manifest['hidden_size']}"
        )
    # Text is pooled the way the vectors' own examples were, whatever the config says now.
    # Read as plain JSON: a file may predate a key, and the Extractor checks the pooling.
    recorded: Mapping[str, Any] = published.manifest
    pooled_as = replace(
        config.model,
        pooling=recorded.get("pooling", config.model.pooling),
        sink_norm_ratio=recorded.get("sink_norm_ratio", config.model.sink_norm_ratio),
    )
    return Extractor.from_config(pooled_as, loaded, layers=published.layers)


def model_input(text: str) -> str:
    """What of `text` the model sees: tag lines never reach it, in probing as in training."""
    return parse_text(text).content or text


def probe_texts(config: Config, texts: list[str]) -> list[dict[str, Any]]:
    """One result per text: `projections` and `z`, concept -> layer -> value."""
    if not texts:
        raise InputError("probe: no text given")
    published = read_published(config)
    extractor = open_extractor(config, published)
    results = []
    contents = [model_input(text) for text in texts]
    for text, extraction in zip(texts, extractor.extract(contents), strict=True):
        if extraction.activations is None:
            raise AmygdalaError(f"probe: {extraction.error}")
        projections, zs = published.project(extraction.activations)
        results.append({"text": text, "projections": projections, "z": zs})
    return results


def format_probe(results: list[dict[str, Any]], top: int = 5) -> str:
    """Top concepts by mean z over layers, per text."""
    blocks = []
    for result in results:
        mean_z = {c: float(np.mean(list(v.values()))) for c, v in result["z"].items()}
        ranked = sorted(mean_z.items(), key=lambda kv: -kv[1])[:top]
        preview = result["text"].replace("\n", " ")
        lines = [preview[:77] + "..." if len(preview) > 80 else preview]
        lines += [f"  {concept:<20} z={z:+.2f}" for concept, z in ranked]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
