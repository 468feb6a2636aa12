"""One Ray worker: loads the model once, then extracts chunk after chunk.

A plain class: `pool` makes it a Ray actor, so this module never imports Ray.
"""

from __future__ import annotations

import os
import time

from amygdala_daemon.core.config import Config
from amygdala_daemon.core.errors import AmygdalaError
from amygdala_daemon.core.manifest import ModelInfo
from amygdala_daemon.model.description import describe
from amygdala_daemon.model.extractor import Extraction, Extractor


class ExtractWorker:
    """The single-process extractor (`Extractor.from_config`), in a worker process."""

    def __init__(self, config: Config) -> None:
        from amygdala_daemon.model.loading import load_model

        self.failure: AmygdalaError | None = None
        self.info: ModelInfo | None = None
        try:
            loaded = load_model(config.model, config.state_path)
        except AmygdalaError as exc:
            # Kept for `model_info`, which raises it where the driver can show it.
            self.failure = exc
            return
        self.extractor = Extractor.from_config(config.model, loaded)
        self.info = describe(loaded, self.extractor, config.model)

    def model_info(self) -> ModelInfo:
        """What this worker's activations are; raises why the model did not load."""
        if self.failure is not None:
            raise self.failure
        assert self.info is not None
        return self.info

    def pid(self) -> int:
        return os.getpid()

    def extract(self, index: int, texts: list[str]) -> tuple[int, list[Extraction], float]:
        """Chunk `index`'s extractions, in input order, and the seconds they took."""
        start = time.perf_counter()
        results = self.extractor.extract(texts)
        return index, results, time.perf_counter() - start
