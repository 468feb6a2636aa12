"""The engine side: one recorder per model, fed by the model runner around each forward pass.

`before_forward` picks up a new generation (never inside a pass); `after_forward` copies the
pass's projections out of the buffer once and files them per request, using the runner's
batch layout: request ids in batch order, `query_start_loc` (each request's first row in the
flattened tokens), and the `positions` and `input_ids` the model was given.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from amygdala_daemon.reader import ReadoutWatcher
from amygdala_daemon.vllm_plugin.projector import Projector, refresh
from amygdala_daemon.vllm_plugin.store import MAX_REQUESTS, TTL_S, ReadoutStore

log = logging.getLogger(__name__)

VECTORS_ENV = "VLLM_READOUT_VECTORS"
MANIFEST_ENV = "VLLM_READOUT_MANIFEST"
MAX_REQUESTS_ENV = "VLLM_READOUT_MAX_REQUESTS"
TTL_ENV = "VLLM_READOUT_TTL_S"
POLL_ENV = "VLLM_READOUT_POLL_S"
WORKER_METHOD = "amygdala_readout"
# A new generation is noticed within this many seconds; a poll is one os.stat per file.
POLL_S = 1.0


class Recorder:
    """Projector + watcher + store for one model instance in one worker process."""

    def __init__(
        self, projector: Projector, watcher: ReadoutWatcher, store: ReadoutStore, records: bool
    ) -> None:
        self.projector = projector
        self.watcher = watcher
        self.store = store
        # Under tensor parallelism every rank holds the whole residual after the all-reduce
        # and computes the same projections; only rank 0 files them.
        self.records = records

    @classmethod
    def from_env(
        cls, blocks: Any, hidden_size: int, max_tokens: int, device: torch.device, rank: int
    ) -> Recorder:
        watcher = ReadoutWatcher(
            os.environ[VECTORS_ENV],
            os.environ.get(MANIFEST_ENV) or None,
            min_interval=float(os.environ.get(POLL_ENV, POLL_S)),
        )
        store = ReadoutStore(
            max_requests=int(os.environ.get(MAX_REQUESTS_ENV, MAX_REQUESTS)),
            ttl_s=float(os.environ.get(TTL_ENV, TTL_S)),
        )
        recorder = cls(
            Projector(blocks, hidden_size, max_tokens, device), watcher, store, rank == 0
        )
        if watcher.current is None:
            log.warning("readout is on but %s has no good generation yet", watcher.path)
        refresh(recorder.projector, watcher)
        return recorder

    def before_forward(self, n_tokens: int) -> None:
        refresh(self.projector, self.watcher)
        self.projector.ensure_tokens(n_tokens)

    def after_forward(self, runner: Any, input_ids: Any, positions: Any) -> None:
        generation = self.projector.generation
        req_ids: list[str] = list(runner.input_batch.req_ids)
        if not self.records or generation is None or not req_ids or input_ids is None:
            return
        starts = np.asarray(runner.query_start_loc.cpu[: len(req_ids) + 1].numpy(), np.int64)
        n_tokens = int(starts[-1])
        # Copies: on a CPU device `.cpu()` is the same memory, which the next pass overwrites.
        raw = self.projector.projections(n_tokens).numpy()
        token_ids = input_ids[:n_tokens].to("cpu", copy=True).numpy()
        token_positions = positions[:n_tokens].to("cpu", copy=True).numpy()
        for index, request_id in enumerate(req_ids):
            state = runner.requests.get(request_id)
            prompt = [] if state is None else list(state.prompt_token_ids or [])
            self.store.begin(request_id, prompt)
            lo, hi = int(starts[index]), int(starts[index + 1])
            self.store.append(
                request_id, generation, token_positions[lo:hi], token_ids[lo:hi], raw[lo:hi]
            )


def fetch_readout(worker: Any, request_id: str) -> dict[str, Any] | None:
    """Run on each worker through `collective_rpc`: the readout this worker recorded."""
    recorder = getattr(worker.model_runner.get_model(), "readout_recorder", None)
    if recorder is None or not recorder.records:
        return None
    rendered: dict[str, Any] | None = recorder.store.render(request_id)
    return rendered
