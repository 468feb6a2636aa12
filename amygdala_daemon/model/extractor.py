"""Pooled residual-stream activations at target decoder blocks, via forward hooks.

Layer i is the output of decoder block i (HF `hidden_states[i + 1]`). The forward pass stops
after the deepest target block: no later block and no LM head runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, assert_never, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from amygdala_daemon.core.config import ModelConfig, Pooling
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.model.loading import LoadedModel

log = logging.getLogger(__name__)

# Attribute paths of the decoder block list in common architectures.
_BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen, Mistral, Gemma, Phi-3
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "layers",  # a bare decoder model
)


def find_decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks, found generically."""
    for path in _BLOCK_PATHS:
        module: Any = model
        for attribute in path.split("."):
            module = getattr(module, attribute, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    # Fall back to the longest ModuleList: in a decoder that is the block stack.
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise InputError(f"cannot find the decoder blocks of {type(model).__name__}")
    return max(lists, key=len)


def resolve_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """Resolve negative indices against the model's depth; reject out-of-range layers."""
    resolved: list[int] = []
    for layer in layers:
        index = layer + n_layers if layer < 0 else layer
        if not 0 <= index < n_layers:
            raise InputError(
                f"config: model.layers: layer {layer} is out of range for a model with "
                f"{n_layers} decoder blocks (accepted: {-n_layers}..{n_layers - 1})"
            )
        if index not in resolved:
            resolved.append(index)
    return sorted(resolved)


# Token budget per batch when `batch_tokens` is 0 ("auto"). On CPU the matmuls already run near
# the core's peak, and past about a thousand tokens the activations fall out of cache:
# SmolLM2 to block 14 on one thread did 700 tokens per CPU-second at 512-1024 tokens a
# batch, 560 at 4096. A GPU wants the larger batch.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 4096


def default_layers(n_layers: int) -> list[int]:
    """Four blocks spread over 50-90% of depth, where emotion directions read best."""
    return sorted({min(n_layers - 1, round(f * (n_layers - 1))) for f in (0.5, 0.65, 0.8, 0.9)})


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early."""


@contextlib.contextmanager
def capture_blocks(
    blocks: nn.ModuleList, layers: Sequence[int], stop_after_last: bool = True
) -> Iterator[dict[int, torch.Tensor]]:
    """Record the output of each block in `layers` while the context is open.

    Hooks are removed in `finally`, so an exception never leaves one on the model.
    """
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(index: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[index] = output[0] if isinstance(output, tuple) else output
            if stop_after_last and index == deepest:
                raise _StopForward

        return hook

    try:
        for index in layers:
            handles.append(blocks[index].register_forward_hook(make_hook(index)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pool(
    hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling, sink_norm_ratio: float
) -> torch.Tensor:
    """Pool `[batch, seq, hidden]` to `[batch, hidden]` over real tokens, in float32.

    Mean pooling leaves out attention sinks: each sequence's first real token, and any token
    whose norm exceeds `sink_norm_ratio` times the sequence's median token norm. A sequence
    with nothing left (one token) falls back to all its real tokens.
    """
    states = hidden.float()
    real = mask.bool()
    positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
    if pooling == "last":
        last = torch.where(real, positions, -1).amax(dim=1)
        return states[torch.arange(states.shape[0], device=states.device), last]
    if pooling != "mean":
        assert_never(pooling)
    first = torch.where(real, positions, real.shape[1]).amin(dim=1, keepdim=True)
    norms = states.norm(dim=-1)
    median = torch.nanmedian(torch.where(real, norms, torch.nan), dim=1, keepdim=True).values
    keep = real & (positions != first) & (norms <= sink_norm_ratio * median)
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, real)
    # `where`, not a multiply by the mask: a padding position is never read, even when it
    # holds inf (inf * 0 would be NaN).
    kept = torch.where(keep.unsqueeze(-1), states, 0.0)
    return kept.sum(dim=1) / keep.sum(dim=1, keepdim=True).to(states.dtype)


@dataclass
class Extraction:
    """One text's pooled activations `[n_layers, hidden]` (float32), or why it has none."""

    activations: npt.NDArray[np.float32] | None
    n_tokens: int
    truncated: bool
    error: str | None = None


@dataclass
class ExtractorCounters:
    """What the model has done so far: the cost model made visible."""

    sequences: int = 0
    batches: int = 0
    tokens: int = 0
    truncated: int = 0


class Extractor:
    """Runs texts through a causal LM and returns pooled activations at target layers.

    `batch_tokens` bounds padded length x texts per forward pass; 0 picks a budget for the
    device (`CPU_BATCH_TOKENS` or `GPU_BATCH_TOKENS`).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        layers: Sequence[int],
        *,
        pooling: Pooling = "mean",
        sink_norm_ratio: float = 10.0,
        max_tokens: int = 512,
        batch_tokens: int = 4096,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.blocks = find_decoder_blocks(model)
        self.n_layers = len(self.blocks)
        self.layers = (
            resolve_layers(layers, self.n_layers) if layers else default_layers(self.n_layers)
        )
        self.hidden_size = int(getattr(model, "config").hidden_size)  # noqa: B009
        if pooling not in get_args(Pooling):
            # A manifest's pooling arrives unchecked from JSON.
            accepted = ", ".join(repr(p) for p in get_args(Pooling))
            raise InputError(f"pooling: {pooling!r} is not one of {accepted}")
        self.pooling = pooling
        self.sink_norm_ratio = sink_norm_ratio
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.counters = ExtractorCounters()
        self.device = next(model.parameters()).device
        if batch_tokens <= 0:
            batch_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else GPU_BATCH_TOKENS
        self.batch_tokens = batch_tokens

    @classmethod
    def from_config(
        cls,
        model_config: ModelConfig,
        loaded: LoadedModel,
        *,
        layers: Sequence[int] | None = None,
    ) -> Extractor:
        """An extractor over `loaded` with the layers, pooling and batching of `model_config`.

        `layers`, when given, replaces `model_config.layers`: a sweep over every block, or the
        layers a published file was made at.

            loaded = load_model(config.model, config.state_path)
            extractor = Extractor.from_config(config.model, loaded)
        """
        return cls(
            loaded.model,
            loaded.tokenizer,
            model_config.layers if layers is None else layers,
            pooling=model_config.pooling,
            sink_norm_ratio=model_config.sink_norm_ratio,
            max_tokens=model_config.max_tokens,
            batch_tokens=model_config.batch_tokens,
            batch_size=model_config.batch_size,
        )

    def tokenize(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """Token ids per text, cut to `max_tokens`, with whether it was cut."""
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)
        out = []
        for ids in encoded["input_ids"]:
            truncated = len(ids) > self.max_tokens
            out.append((list(ids[: self.max_tokens]), truncated))
        return out

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Group indices into length-sorted batches within the token budget."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            padded = max(lengths[index], 1) * (len(current) + 1)
            if current and (padded > self.batch_tokens or len(current) >= self.batch_size):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def _pad(self, token_lists: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded `input_ids` and the mask of real tokens, `[batch, longest]`, on the host.

        Always on the right, whatever the tokenizer's `padding_side`: in a causal model a real
        token never attends to a later position, so right padding cannot change it, and the
        forward pass needs no attention mask at all (see `_forward`).
        """
        longest = max(len(ids) for ids in token_lists)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        input_ids = torch.full((len(token_lists), longest), int(pad_id), dtype=torch.long)
        lengths = torch.tensor([len(ids) for ids in token_lists], dtype=torch.long)
        for row, ids in enumerate(token_lists):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        real = torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)
        return input_ids, real

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            # A pinned source lets the copy run asynchronously with the host's next step.
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            # The copy is queued on the current stream; wait for it before the host reads.
            torch.cuda.current_stream(self.device).synchronize()
            return host
        return tensor.cpu()

    def _forward(self, token_lists: Sequence[list[int]]) -> torch.Tensor:
        """Pooled `[batch, n_layers, hidden]` for one padded batch, on the host.

        No attention mask goes to the model: padding is on the right, so causal attention
        alone keeps every real token from seeing it. Without a mask, SDPA runs its fused
        causal kernel (`is_causal`) and transformers builds no 4-D mask. Padding is left out
        where it matters, in pooling.
        """
        input_ids, real = self._pad(token_lists)
        n_tokens = int(real.sum())
        input_ids = self._to_device(input_ids)
        real = self._to_device(real)
        with torch.inference_mode(), capture_blocks(self.blocks, self.layers) as captured:
            with contextlib.suppress(_StopForward):
                self.model(input_ids=input_ids, use_cache=False)
            pooled = torch.stack(
                [
                    pool(captured[layer], real, self.pooling, self.sink_norm_ratio)
                    for layer in self.layers
                ],
                dim=1,
            )
            pooled = self._to_host(pooled)
        self.counters.batches += 1
        self.counters.sequences += len(token_lists)
        self.counters.tokens += n_tokens
        return pooled

    def token_activations(self, text: str) -> tuple[list[int], npt.NDArray[np.float32]]:
        """Token ids and unpooled block outputs `[n_layers, n_tokens, hidden]` of one text.

        Every token, position 0 and sinks included; cut to `max_tokens` as `extract` cuts.
        """
        [(ids, _)] = self.tokenize([text])
        if not ids:
            raise InputError("the text has no tokens")
        input_ids = self._to_device(torch.tensor([ids], dtype=torch.long))
        with torch.inference_mode(), capture_blocks(self.blocks, self.layers) as captured:
            with contextlib.suppress(_StopForward):
                self.model(input_ids=input_ids, use_cache=False)
            outputs = self._to_host(torch.stack([captured[i][0].float() for i in self.layers]))
        return ids, outputs.numpy()

    def _run_batch(self, token_lists: Sequence[list[int]]) -> list[torch.Tensor | str]:
        """Pooled activations per text; on CUDA out-of-memory, halve the budget and retry.

        The lower budget stays for later batches (`extract` re-plans them), so one tight
        fit costs one failed attempt, not one per batch. A single text that does not fit
        gets an error string instead: it is quarantined, and the daemon carries on.
        """
        try:
            return list(self._forward(token_lists))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            padded = max(len(ids) for ids in token_lists) * len(token_lists)
            if len(token_lists) == 1:
                return [f"out of GPU memory on {len(token_lists[0])} tokens"]
            self.batch_tokens = min(self.batch_tokens, max(1, padded // 2))
            log.warning(
                "out of GPU memory on a batch of %d texts (%d tokens); token budget now %d",
                len(token_lists),
                padded,
                self.batch_tokens,
            )
            half = len(token_lists) // 2
            return self._run_batch(token_lists[:half]) + self._run_batch(token_lists[half:])

    def extract(self, texts: Sequence[str], progress: Any | None = None) -> list[Extraction]:
        """Pooled activations for each text, in input order.

        `progress`, if given, is called with the number of texts finished after each batch.
        """
        tokenized = self.tokenize(texts)
        results: list[Extraction | None] = [None] * len(texts)
        empty = [i for i, (ids, _) in enumerate(tokenized) if not ids]
        for index in empty:
            results[index] = Extraction(None, 0, False, "the content has no tokens")
        runnable = [i for i, (ids, _) in enumerate(tokenized) if ids]
        planned_budget = self.batch_tokens
        pending = deque(
            [runnable[i] for i in planned]
            for planned in self.plan_batches([len(tokenized[i][0]) for i in runnable])
        )
        while pending:
            batch = pending.popleft()
            outputs = self._run_batch([tokenized[i][0] for i in batch])
            if self.batch_tokens != planned_budget:
                # Out of memory lowered the budget: re-plan what is left under it.
                rest = [index for waiting in pending for index in waiting]
                replanned = self.plan_batches([len(tokenized[i][0]) for i in rest])
                pending = deque([rest[j] for j in planned] for planned in replanned)
                planned_budget = self.batch_tokens
            for index, output in zip(batch, outputs, strict=True):
                ids, truncated = tokenized[index]
                self.counters.truncated += int(truncated)
                if isinstance(output, str):
                    results[index] = Extraction(None, len(ids), truncated, output)
                    continue
                bad = (~torch.isfinite(output)).any(dim=-1)
                if bad.any():
                    layers = [self.layers[i] for i in torch.nonzero(bad).flatten().tolist()]
                    reason = f"non-finite activations at layer(s) {layers}"
                    results[index] = Extraction(None, len(ids), truncated, reason)
                    continue
                array = output.numpy().astype(np.float32, copy=False)
                results[index] = Extraction(array, len(ids), truncated)
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]
