"""The published manifest's contract: its keys, the layer convention, and where vectors came from.

`Manifest` is shared by the publisher, the read-only views and the consumer-side reader.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.config import Config

LAYER_CONVENTION = (
    "block_output: layer i is the output of decoder block i (0-based), i.e. Hugging Face "
    "hidden_states[i + 1] and vLLM hidden_states + residual after layer i"
)


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
