"""The published manifest's contract: its keys, the layer convention, and where vectors came from.

`Manifest` is shared by everything that writes a vectors file (the daemon's publisher and the
seed's `train`) and everything that reads one (the read-only views and the consumer-side
reader). `build_manifest` is the one place a manifest is put together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NotRequired, TypedDict, cast

import numpy as np
import numpy.typing as npt

FORMAT = "amygdala-readout/1"
LAYER_CONVENTION = (
    "block_output: layer i is the output of decoder block i (0-based), i.e. Hugging Face "
    "hidden_states[i + 1] and vLLM hidden_states + residual after layer i"
)
VECTORS_FILE = "vectors.safetensors"
MANIFEST_FILE = "manifest.json"

# concept -> layer (as a string) -> figure; JSON object keys are strings.
PerLayer = dict[str, dict[str, float]]


class Counts(TypedDict):
    n_pos: int
    n_neg: int


class Quality(TypedDict):
    """Held-out separation per concept and layer (None where it cannot be measured)."""

    held_out: str
    auroc: dict[str, dict[str, float | None]]
    cohens_d: dict[str, dict[str, float | None]]


class EvaluationStamp(TypedDict):
    """Which ledger state the sampled figures (spreads, quality) describe."""

    ledger_seq: int
    at: str
    reason: str | None
    sampled_nodes: int


class Manifest(TypedDict):
    """`manifest.json`, also embedded in the safetensors `__metadata__` under "manifest"."""

    format: str
    concepts: list[str]
    """Row order of every `layer_<idx>.vectors` tensor."""
    layers: list[int]
    model_id: str
    model_revision: str
    hidden_size: int
    dtype: str
    layer_convention: str
    method: str
    pooling: str
    sink_norm_ratio: NotRequired[float]
    """How many times the median token norm makes a token a sink left out of mean pooling."""
    generation: int
    created_at: str
    counts: dict[str, Counts]
    unpublished: dict[str, str]
    calibration: dict[str, PerLayer]
    # The daemon's generations only.
    ledger_seq: NotRequired[int]
    stale: NotRequired[list[str]]
    settings_fingerprint: NotRequired[str]
    registry_epoch: NotRequired[str]
    quality: NotRequired[Quality]
    evaluation: NotRequired[EvaluationStamp]
    # `train`'s files only.
    source: NotRequired[str]
    training_data: NotRequired[str]
    model_dtype: NotRequired[str]


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
    """A generation ready to be written: one `[n_concepts, hidden]` array per layer."""

    vectors: dict[int, npt.NDArray[np.float64]]
    manifest: Manifest


def layer_key(layer: int) -> str:
    """The tensor key of a layer's vectors.

    >>> layer_key(14)
    'layer_14.vectors'
    """
    return f"layer_{layer}.vectors"


def build_manifest(
    model: ModelInfo,
    concepts: list[str],
    *,
    dtype: str,
    method: str,
    generation: int,
    created_at: str,
    counts: dict[str, Counts],
    unpublished: dict[str, str],
    calibration: dict[str, PerLayer],
) -> Manifest:
    """The keys every vectors file carries; callers add their own optional keys."""
    return {
        "format": FORMAT,
        "concepts": concepts,
        "layers": model.layers,
        "model_id": model.model_id,
        "model_revision": model.revision,
        "hidden_size": model.hidden_size,
        "dtype": dtype,
        "layer_convention": LAYER_CONVENTION,
        "method": method,
        "pooling": model.pooling,
        "sink_norm_ratio": model.sink_norm_ratio,
        "generation": generation,
        "created_at": created_at,
        "counts": counts,
        "unpublished": unpublished,
        "calibration": calibration,
    }


def parse_manifest(raw: object) -> Manifest:
    """A manifest read from JSON, with the keys every reader relies on checked.

    Raises `ValueError` naming the first key that is missing or of the wrong type.

    >>> parse_manifest({"concepts": ["joy"], "layers": [3], "hidden_size": 8})["layers"]
    [3]
    >>> parse_manifest({"concepts": "joy", "layers": [3], "hidden_size": 8})
    Traceback (most recent call last):
    ...
    ValueError: manifest key 'concepts' is missing or not a list
    """
    if not isinstance(raw, Mapping):
        raise ValueError("the manifest is not a JSON object")
    for key, kind in (("concepts", list), ("layers", list), ("hidden_size", int)):
        if not isinstance(raw.get(key), kind):
            article = "an integer" if kind is int else "a list"
            raise ValueError(f"manifest key {key!r} is missing or not {article}")
    return cast(Manifest, dict(raw))


def manifest_json(manifest: Manifest) -> str:
    """The manifest as written to disk and embedded in the vectors file."""
    payload: Mapping[str, Any] = manifest
    return json.dumps(payload, indent=2, sort_keys=True)
