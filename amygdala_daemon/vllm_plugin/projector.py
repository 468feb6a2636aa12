"""Projects the residual stream after hooked decoder blocks onto the readout vectors.

The hooks do tensor math only, into one preallocated buffer `[layers, tokens, concepts]`:
vLLM's fused add-and-norm kernels overwrite `hidden_states` and `residual` in place in the
next block, so the projection has to be taken inside the hook, and a hook with Python side
effects would break a torch.compile trace (and a CUDA graph replay needs fixed addresses).
A new generation is swapped in between forward passes only (`refresh`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from amygdala_daemon.reader import Readout, ReadoutWatcher
from amygdala_daemon.vllm_plugin.store import Generation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """One hooked layer: its buffer row and its transposed vectors `[hidden, concepts]`."""

    row: int
    weight_t: torch.Tensor


class Projector:
    """Hooks on every decoder block; only the blocks of the current generation compute."""

    def __init__(
        self,
        blocks: Sequence[torch.nn.Module],
        hidden_size: int,
        max_tokens: int,
        device: torch.device,
    ) -> None:
        self.blocks = list(blocks)
        self.hidden_size = hidden_size
        self.device = device
        self.slots: dict[int, Slot] = {}
        self.generation: Generation | None = None
        self.rejected: tuple[int | None, list[str]] | None = None
        self.buffer = torch.zeros((0, max_tokens, 0), dtype=torch.float32, device=device)
        self._handles = [
            block.register_forward_hook(self._hook(index)) for index, block in enumerate(blocks)
        ]

    def _hook(self, index: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            slot = self.slots.get(index)
            if slot is None or not isinstance(output, tuple) or len(output) < 2:
                return
            hidden, residual = output[0], output[1]
            stream = hidden if residual is None else hidden + residual
            n_tokens, n_concepts = stream.shape[0], slot.weight_t.shape[1]
            self.buffer[slot.row, :n_tokens, :n_concepts].copy_(stream.float() @ slot.weight_t)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def check(self, readout: Readout) -> str | None:
        """Why this model cannot use `readout`, or None."""
        if int(readout.manifest["hidden_size"]) != self.hidden_size:
            return (
                f"hidden_size {readout.manifest['hidden_size']}, the model has {self.hidden_size}"
            )
        outside = [layer for layer in readout.layers if not 0 <= layer < len(self.blocks)]
        if outside:
            return f"layers {outside} are outside the model's {len(self.blocks)} blocks"
        return None

    def load(self, readout: Readout) -> None:
        """Use `readout` from the next forward pass on; the buffer only ever grows."""
        n_layers, n_concepts = len(readout.layers), len(readout.concepts)
        old = self.buffer
        if n_layers > old.shape[0] or n_concepts > old.shape[2]:
            self.buffer = torch.zeros(
                (max(n_layers, old.shape[0]), old.shape[1], max(n_concepts, old.shape[2])),
                dtype=torch.float32,
                device=self.device,
            )
        self.slots = {
            layer: Slot(row, torch.from_numpy(readout.vectors[layer]).to(self.device).T.clone())
            for row, layer in enumerate(readout.layers)
        }
        self.generation = Generation(
            generation=readout.generation,
            concepts=list(readout.concepts),
            layers=list(readout.layers),
            calibration=dict(readout.manifest.get("calibration", {})),
        )

    def ensure_tokens(self, n_tokens: int) -> None:
        """Grow the token axis for a batch larger than planned (eager mode only)."""
        if n_tokens > self.buffer.shape[1]:
            shape = (self.buffer.shape[0], n_tokens, self.buffer.shape[2])
            self.buffer = torch.zeros(shape, dtype=torch.float32, device=self.device)

    def projections(self, n_tokens: int) -> torch.Tensor:
        """`[tokens, layers, concepts]` of the pass that just ran: a CPU copy, not a view."""
        if self.generation is None:
            return torch.zeros((n_tokens, 0, 0))
        n_layers, n_concepts = len(self.generation.layers), len(self.generation.concepts)
        return self.buffer[:n_layers, :n_tokens, :n_concepts].permute(1, 0, 2).to("cpu", copy=True)


def refresh(projector: Projector, watcher: ReadoutWatcher) -> None:
    """Between forward passes: take the watcher's newest good generation, if it fits."""
    readout = watcher.poll()
    if readout is None:
        return
    current = projector.generation
    seen = (readout.generation, readout.concepts)
    if current is not None and (current.generation, current.concepts) == seen:
        return
    problem = projector.check(readout)
    if problem is not None:
        if projector.rejected == seen:
            return  # said once already
        projector.rejected = seen
        log.warning(
            "keeping generation %s: %s does not fit this model: %s",
            current.generation if current else None,
            readout.path,
            problem,
        )
        return
    projector.load(readout)
    log.info(
        "readout generation %s: %d concepts at layers %s",
        readout.generation,
        len(readout.concepts),
        readout.layers,
    )
