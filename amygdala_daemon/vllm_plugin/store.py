"""Per-request readout records, bounded by a count and a time to live, and their JSON form.

Pure numpy: the engine side appends one chunk per forward pass, the HTTP side renders one
request. A client that never fetches costs at most `max_requests` records, each kept no
longer than `ttl_s` after its last token.

>>> import numpy as np
>>> store = ReadoutStore(max_requests=2, ttl_s=60.0, clock=lambda: 0.0)
>>> gen = Generation(generation=3, concepts=["joy"], layers=[5], calibration={})
>>> store.begin("cmpl-a-0-1234abcd", prompt_token_ids=[7, 8])
>>> store.append("cmpl-a-0-1234abcd", gen, [0, 1], [7, 8], np.ones((2, 1, 1), np.float32))
>>> store.render("cmpl-a")["tokens"][1]["raw"]
{'joy': {'5': 1.0}}
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from amygdala_daemon.core.manifest import PerLayer
from amygdala_daemon.core.vectors import z_score

# Defaults: a busy server finishes far fewer requests than this between two fetches, and a
# client fetches its readout within seconds of the response.
MAX_REQUESTS = 1024
TTL_S = 600.0


@dataclass(frozen=True)
class Generation:
    """What a chunk of projections was computed with: its row and column order."""

    generation: int | None
    concepts: list[str]
    layers: list[int]
    calibration: dict[str, PerLayer]


@dataclass
class Chunk:
    """One forward pass's tokens of one request: `raw` is [tokens, layers, concepts]."""

    generation: Generation
    positions: npt.NDArray[np.int64]
    token_ids: npt.NDArray[np.int64]
    raw: npt.NDArray[np.float32]


@dataclass
class Record:
    prompt_token_ids: list[int]
    touched: float
    chunks: list[Chunk] = field(default_factory=list)


class ReadoutStore:
    """Records keyed by engine request id, oldest evicted first."""

    def __init__(
        self,
        max_requests: int = MAX_REQUESTS,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests < 1 or ttl_s <= 0:
            raise ValueError("max_requests must be >= 1 and ttl_s > 0")
        self.max_requests = max_requests
        self.ttl_s = ttl_s
        self.clock = clock
        self._records: OrderedDict[str, Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def begin(self, request_id: str, prompt_token_ids: Sequence[int]) -> None:
        """Start a record (a no-op for a request already seen, e.g. the next prefill chunk)."""
        if request_id in self._records:
            return
        self._records[request_id] = Record(list(prompt_token_ids), self.clock())
        self.evict()

    def append(
        self,
        request_id: str,
        generation: Generation,
        positions: Sequence[int] | npt.NDArray[np.int64],
        token_ids: Sequence[int] | npt.NDArray[np.int64],
        raw: npt.NDArray[np.float32],
    ) -> None:
        record = self._records.get(request_id)
        if record is None:  # evicted while still running: its readout is gone anyway
            return
        record.touched = self.clock()
        self._records.move_to_end(request_id)
        record.chunks.append(
            Chunk(generation, np.asarray(positions, np.int64), np.asarray(token_ids, np.int64), raw)
        )

    def evict(self) -> None:
        """Drop records idle past the time to live, then the oldest beyond the cap."""
        deadline = self.clock() - self.ttl_s
        for request_id in [k for k, r in self._records.items() if r.touched < deadline]:
            del self._records[request_id]
        while len(self._records) > self.max_requests:
            self._records.popitem(last=False)

    def find(self, request_id: str) -> str | None:
        """The engine id for a response id: engines append `-<suffix>` parts to it."""
        self.evict()
        if request_id in self._records:
            return request_id
        prefix = request_id + "-"
        return next((key for key in self._records if key.startswith(prefix)), None)

    def render(self, request_id: str) -> dict[str, Any] | None:
        """The readout of one request as JSON-ready data, or None when there is none."""
        key = self.find(request_id)
        return None if key is None else render_record(key, self._records[key])


def _per_layer(
    values: npt.NDArray[np.float32], gen: Generation, z: bool
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for c, concept in enumerate(gen.concepts):
        row: dict[str, float | None] = {}
        for li, layer in enumerate(gen.layers):
            value = float(values[li, c])
            calibration = gen.calibration.get(concept, {}).get(str(layer))
            if z:
                row[str(layer)] = None if calibration is None else z_score(value, calibration)
            else:
                row[str(layer)] = value
        out[concept] = row
    return out


def _mean(tokens: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    sums: dict[str, dict[str, list[float]]] = {}
    for token in tokens:
        for concept, layers in token["z"].items():
            for layer, value in layers.items():
                if value is not None:
                    sums.setdefault(concept, {}).setdefault(layer, []).append(value)
    return {
        concept: {layer: float(np.mean(values)) for layer, values in layers.items()}
        for concept, layers in sums.items()
    }


def render_record(request_id: str, record: Record) -> dict[str, Any]:
    """`tokens` in position order; positions no forward pass computed are listed as missing."""
    by_position: dict[int, dict[str, Any]] = {}
    last: Generation | None = None
    for chunk in record.chunks:
        last = chunk.generation
        for row, position in enumerate(chunk.positions.tolist()):
            # A recomputed position (preemption) is the same residual: the later one wins.
            by_position[position] = {
                "position": position,
                "token_id": int(chunk.token_ids[row]),
                "generation": chunk.generation.generation,
                "raw": _per_layer(chunk.raw[row], chunk.generation, z=False),
                "z": _per_layer(chunk.raw[row], chunk.generation, z=True),
            }
    n_prompt = len(record.prompt_token_ids)
    end = max([n_prompt, *(p + 1 for p in by_position)])
    missing = [p for p in range(end) if p not in by_position]
    tokens = [by_position[p] for p in sorted(by_position)]
    for token in tokens:
        token["part"] = "prompt" if token["position"] < n_prompt else "completion"
    return {
        "request_id": request_id,
        "generation": last.generation if last else None,
        "generations": sorted({t["generation"] for t in tokens if t["generation"] is not None}),
        "concepts": last.concepts if last else [],
        "layers": last.layers if last else [],
        "n_prompt_tokens": n_prompt,
        "tokens": tokens,
        # Prompt tokens served from the prefix cache never pass through the model here.
        "missing_positions": missing,
        "missing_token_ids": [
            record.prompt_token_ids[p] if p < n_prompt else None for p in missing
        ],
        # The last generated token is sampled from the last pass and never fed back in, so no
        # pass computes its residual: completion tokens here are all but that one.
        "last_token_not_forwarded": True,
        "prompt_mean": _mean([t for t in tokens if t["part"] == "prompt"]),
        "completion_mean": _mean([t for t in tokens if t["part"] == "completion"]),
    }
