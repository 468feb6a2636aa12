"""What the vLLM tests share: SmolLM2 as safetensors, published generations, HF references."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from amygdala_daemon.core.manifest import ModelInfo, PerLayer, Release, build_manifest
from amygdala_daemon.model.loading import convert_smollm2
from amygdala_daemon.store.generations import write_generation

LAYERS = [3, 10, 17, 24]
HIDDEN = 576
CONCEPTS = [f"concept{i:02d}" for i in range(14)]
# Small and quick on two cores: one core for the engine, few tokens.
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


def smollm2_dir(cache: Path) -> Path:
    """The project's own safetensors copy of the bundled GGUF (converted once)."""
    return convert_smollm2(cache)


def unit_rows(seed: int, n_concepts: int) -> dict[int, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    vectors = {}
    for layer in LAYERS:
        rows = rng.standard_normal((n_concepts, HIDDEN))
        vectors[layer] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return vectors


def publish(published: Path, generation: int, n_concepts: int, seed: int) -> Release:
    """A generation with `n_concepts` random unit rows per layer, through the real publisher."""
    concepts = (
        CONCEPTS[:n_concepts]
        if n_concepts <= len(CONCEPTS)
        else [f"concept{i:02d}" for i in range(n_concepts)]
    )
    calibration: dict[str, PerLayer] = {
        name: {
            str(layer): {"neg_mean": 0.5 * i, "neg_std": 1.0 + i, "pos_mean": 2.0, "pos_std": 1.0}
            for layer in LAYERS
        }
        for i, name in enumerate(concepts)
    }
    model = ModelInfo("smollm2-135m", "test", LAYERS, HIDDEN, 30, "mean", 10.0, 256)
    manifest = build_manifest(
        model,
        concepts,
        dtype="float32",
        method="mean_diff",
        generation=generation,
        created_at="2026-01-01T00:00:00Z",
        counts={name: {"n_pos": 5, "n_neg": 5} for name in concepts},
        unpublished={},
        calibration=calibration,
    )
    release = Release(vectors=unit_rows(seed, n_concepts), manifest=manifest)
    write_generation(release, published, "float32", keep=10)
    return release


def engine_env(vectors: Path | None) -> None:
    """Environment for the engine processes vLLM spawns next (they read it at start)."""
    os.environ.update(ENGINE_ENV)
    if vectors is None:
        os.environ.pop("VLLM_READOUT_VECTORS", None)
    else:
        os.environ["VLLM_READOUT_VECTORS"] = str(vectors)
        os.environ["VLLM_READOUT_POLL_S"] = "0"


@functools.cache
def hf_model(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def hf_streams(model_dir: Path, token_ids: list[int]) -> dict[int, npt.NDArray[np.float64]]:
    """The reference: a plain HF forward, residual stream after block i = hidden_states[i + 1]."""
    model = hf_model(model_dir)
    with torch.no_grad():
        out = model(torch.tensor([token_ids]), output_hidden_states=True)
    return {layer: out.hidden_states[layer + 1][0].double().numpy() for layer in LAYERS}


def assert_matches(readout: dict[str, Any], release: Release, streams: dict[int, Any]) -> None:
    """Every recorded token's raw projection equals the HF projection within 1e-4 relative."""
    concepts = release.manifest["concepts"]
    assert readout["concepts"] == concepts
    for token in readout["tokens"]:
        position = token["position"]
        for layer in LAYERS:
            stream = streams[layer][position]
            expected = release.vectors[layer] @ stream
            got = np.array([token["raw"][name][str(layer)] for name in concepts])
            # A projection onto a unit row is bounded by the residual's norm: relative to it.
            error = np.max(np.abs(got - expected)) / np.linalg.norm(stream)
            assert error < 1e-4, (position, layer, error)
