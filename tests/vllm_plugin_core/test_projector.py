"""The hooks and the reload choice on real torch blocks shaped like vLLM's (no vLLM needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from amygdala_daemon.core.manifest import VECTORS_FILE
from amygdala_daemon.reader import ReadoutWatcher
from amygdala_daemon.store.generations import generation_dir, swap_current
from amygdala_daemon.vllm_plugin.projector import Projector, refresh
from tests.vllm_plugin.support import HIDDEN, LAYERS, publish

N_BLOCKS = 30


class Block(torch.nn.Module):
    """Returns (hidden, residual) as vLLM's Llama layers do, and reuses its inputs in place."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.scale = 1.0 + seed / 10.0

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual.add_(hidden)  # like a fused add-and-norm kernel: the caller's buffers change
        hidden.copy_(torch.tanh(residual) * self.scale)
        return hidden, residual


def run(blocks: list[Block], tokens: int) -> dict[int, torch.Tensor]:
    """Runs the stack; returns the residual stream after each block, copied at once."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, HIDDEN, generator=generator)
    residual = torch.zeros(tokens, HIDDEN)
    streams = {}
    for index, block in enumerate(blocks):
        hidden, residual = block(hidden, residual)
        streams[index] = (hidden + residual).clone()
    return streams


@pytest.fixture
def blocks() -> list[Block]:
    return [Block(i) for i in range(N_BLOCKS)]


def test_projections_are_taken_inside_the_hook(blocks: list[Block], tmp_path: Path) -> None:
    release = publish(tmp_path, 1, 14, seed=1)
    projector = Projector(blocks, HIDDEN, max_tokens=8, device=torch.device("cpu"))
    refresh(projector, ReadoutWatcher(tmp_path / "current" / VECTORS_FILE))
    streams = run(blocks, tokens=5)
    got = projector.projections(5).numpy()
    assert got.shape == (5, len(LAYERS), 14)
    for row, layer in enumerate(LAYERS):
        expected = streams[layer].double().numpy() @ release.vectors[layer].T
        np.testing.assert_allclose(got[:, row], expected, rtol=1e-5, atol=1e-4)
    projector.remove()
    assert all(not block._forward_hooks for block in blocks)


def test_reload_grows_and_keeps_last_good(
    blocks: list[Block], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(tmp_path, 1, 14, seed=1)
    watcher = ReadoutWatcher(tmp_path / "current" / VECTORS_FILE)
    projector = Projector(blocks, HIDDEN, max_tokens=8, device=torch.device("cpu"))
    refresh(projector, watcher)
    bigger = publish(tmp_path, 2, 15, seed=2)
    refresh(projector, watcher)
    assert projector.generation is not None and projector.generation.generation == 2
    streams = run(blocks, tokens=3)
    got = projector.projections(3).numpy()
    assert got.shape == (3, len(LAYERS), 15)
    np.testing.assert_allclose(
        got[:, 0], streams[LAYERS[0]].double().numpy() @ bigger.vectors[LAYERS[0]].T, atol=1e-4
    )
    torn = generation_dir(tmp_path, 3)
    torn.mkdir()
    data = (generation_dir(tmp_path, 2) / VECTORS_FILE).read_bytes()
    (torn / VECTORS_FILE).write_bytes(data[:100])
    swap_current(tmp_path, 3)
    with caplog.at_level(logging.WARNING):
        refresh(projector, watcher)
    assert projector.generation.generation == 2
    assert "keeping generation 2" in caplog.text


def test_a_file_for_another_model_is_refused_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(tmp_path, 1, 14, seed=1)
    few = [Block(i) for i in range(4)]  # the published layers reach block 24
    projector = Projector(few, HIDDEN, max_tokens=8, device=torch.device("cpu"))
    watcher = ReadoutWatcher(tmp_path / "current" / VECTORS_FILE)
    with caplog.at_level(logging.WARNING):
        refresh(projector, watcher)
        refresh(projector, watcher)
    assert projector.generation is None
    assert caplog.text.count("does not fit this model") == 1
    assert "outside the model's 4 blocks" in caplog.text
