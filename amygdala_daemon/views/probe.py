"""Project text onto the current published vectors: raw dot products and calibrated z-scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError, InputError
from amygdala_daemon.core.manifest import VECTORS_FILE, layer_key
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.core.vectors import z_score
from amygdala_daemon.model.extractor import Extractor
from amygdala_daemon.model.loading import load_model
from amygdala_daemon.store.generations import current_manifest


def probe_texts(config: Config, texts: list[str]) -> list[dict[str, Any]]:
    """One result per text: `projections` and `z`, concept -> layer -> value."""
    if not texts:
        raise InputError("probe: no text given")
    published = StatePaths(config.state_path).published
    manifest = current_manifest(published)
    if manifest is None:
        raise AmygdalaError(f"probe: no published generation under {published}; run rebuild first")
    from safetensors.numpy import load_file

    tensors = load_file(str(published / "current" / VECTORS_FILE))
    layers: list[int] = manifest["layers"]
    loaded = load_model(config.model, config.state_path)
    if int(loaded.model.config.hidden_size) != manifest["hidden_size"]:
        raise InputError(
            f"probe: model.name {config.model.name!r} has hidden size "
            f"{loaded.model.config.hidden_size}, the vectors have {manifest['hidden_size']}"
        )
    # Text is pooled the way the vectors' own examples were, whatever the config says now.
    # Read as plain JSON: a file may predate a key, and the Extractor checks the pooling.
    recorded: Mapping[str, Any] = manifest
    pooled_as = replace(
        config.model,
        pooling=recorded.get("pooling", config.model.pooling),
        sink_norm_ratio=recorded.get("sink_norm_ratio", config.model.sink_norm_ratio),
    )
    extractor = Extractor.from_config(pooled_as, loaded, layers=layers)
    # Tag lines never reach the model, in probing as in training.
    contents = [parse_text(text).content or text for text in texts]
    results = []
    for text, extraction in zip(texts, extractor.extract(contents), strict=True):
        if extraction.activations is None:
            raise AmygdalaError(f"probe: {extraction.error}")
        projections: dict[str, dict[str, float]] = {c: {} for c in manifest["concepts"]}
        zs: dict[str, dict[str, float]] = {c: {} for c in manifest["concepts"]}
        for i, layer in enumerate(layers):
            rows = tensors[layer_key(layer)].astype(np.float64)
            values = rows @ extraction.activations[i].astype(np.float64)
            for concept, value in zip(manifest["concepts"], values, strict=True):
                projections[concept][str(layer)] = float(value)
                zs[concept][str(layer)] = z_score(
                    float(value), manifest["calibration"][concept][str(layer)]
                )
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
