"""Reading a published generation the way a consumer does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open


def check_generation(directory: Path) -> dict[str, Any]:
    """Load like a consumer: rows unit norm, keys and shapes match, metadata == manifest.json."""
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    with safe_open(str(directory / "vectors.safetensors"), framework="numpy") as handle:
        embedded = json.loads(handle.metadata()["manifest"])
        assert embedded == manifest
        assert sorted(handle.keys()) == sorted(
            f"layer_{layer}.vectors" for layer in manifest["layers"]
        )
        for layer in manifest["layers"]:
            rows = handle.get_tensor(f"layer_{layer}.vectors")
            assert rows.shape == (len(manifest["concepts"]), manifest["hidden_size"])
            assert rows.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    return manifest
