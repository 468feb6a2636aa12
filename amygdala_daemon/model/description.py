"""What a loaded model and its extractor make: the `ModelInfo` every ledger and manifest records."""

from __future__ import annotations

from amygdala_daemon.core.config import ModelConfig
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.model.extractor import Extractor
from amygdala_daemon.model.loading import LoadedModel


def describe(loaded: LoadedModel, extractor: Extractor, model: ModelConfig) -> ModelInfo:
    """Where the activations come from: model, layers, width, and how tokens are pooled."""
    return ModelInfo(
        model_id=loaded.model_id,
        revision=loaded.revision,
        layers=extractor.layers,
        hidden_size=extractor.hidden_size,
        n_layers=extractor.n_layers,
        pooling=model.pooling,
        sink_norm_ratio=model.sink_norm_ratio,
        max_tokens=model.max_tokens,
    )
