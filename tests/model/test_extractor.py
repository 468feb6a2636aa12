from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from amygdala_daemon.core.config import ModelConfig, Pooling
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.model.extractor import (
    Extractor,
    capture_blocks,
    default_layers,
    find_decoder_blocks,
    resolve_layers,
)
from amygdala_daemon.model.loading import load_model
from tests.helpers.graphs import sample_nodes
from tests.helpers.tiny_model import TINY_LAYERS

TEXTS = [parse_text(n["text"]).content for n in sample_nodes()[:40]]


def reference_pooled(
    model: Any, tokenizer: Any, text: str, layer: int, pooling: str, ratio: float
) -> np.ndarray:
    """Plain full forward with output_hidden_states, one text, pooled by hand."""
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden: torch.Tensor = (
            model(**ids, output_hidden_states=True).hidden_states[layer + 1][0].double()
        )
    if pooling == "last":
        return hidden[-1].numpy()
    norms = hidden.norm(dim=-1)
    median = norms.median()  # torch's lower median, as the extractor's nanmedian
    keep = [i for i in range(1, len(hidden)) if norms[i] <= ratio * median]
    if not keep:
        keep = list(range(len(hidden)))
    return hidden[keep].mean(dim=0).numpy()


def test_hook_output_equals_hidden_states_and_stops_early(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    blocks = find_decoder_blocks(model)
    assert len(blocks) == TINY_LAYERS
    ids = tokenizer(TEXTS[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**ids, output_hidden_states=True).hidden_states
    # transformers installs its own capture hooks on first use; ours must come and go.
    hooks_before = [dict(b._forward_hooks) for b in blocks]
    calls: list[int] = []
    counters = [
        b.register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n, b in enumerate(blocks)
    ]
    head_calls: list[int] = []
    head = model.lm_head.register_forward_hook(lambda m, i, o: head_calls.append(1))
    try:
        for layers in ([0], [1, 2], [0, 2]):
            calls.clear()
            with torch.no_grad(), capture_blocks(blocks, layers) as captured:
                try:
                    model(**ids)
                except Exception as exc:  # the stop signal
                    assert type(exc).__name__ == "_StopForward"
            assert calls == list(range(max(layers) + 1)), "no block past the deepest target runs"
            for layer in layers:
                torch.testing.assert_close(captured[layer], expected[layer + 1], rtol=0, atol=0)
        assert head_calls == []
    finally:
        for handle in [*counters, head]:
            handle.remove()
    # Hooks are gone even after the stop signal.
    assert [dict(b._forward_hooks) for b in blocks] == hooks_before


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("batch_tokens", [64, 600, 100_000])
def test_pooled_equals_plain_forward(
    tiny_model: tuple[Any, Any], padding_side: str, pooling: Pooling, batch_tokens: int
) -> None:
    model, tokenizer = tiny_model
    tokenizer.padding_side = padding_side
    try:
        # A low sink ratio so the norm rule really removes tokens in this tiny model.
        ratio = 1.05 if pooling == "mean" else 10.0
        extractor = Extractor(
            model,
            tokenizer,
            [0, 1, 2],
            pooling=pooling,
            sink_norm_ratio=ratio,
            batch_tokens=batch_tokens,
        )
        results = extractor.extract(TEXTS)
        for text, result in zip(TEXTS, results, strict=True):
            assert result.activations is not None and result.activations.shape == (3, 64)
            for i, layer in enumerate([0, 1, 2]):  # non-final: HF norms the last
                expected = reference_pooled(model, tokenizer, text, layer, pooling, ratio)
                np.testing.assert_allclose(result.activations[i], expected, rtol=2e-4, atol=2e-5)
    finally:
        tokenizer.padding_side = "right"


def test_batches_are_length_sorted_within_budget(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    extractor = Extractor(model, tokenizer, [1], batch_tokens=200, batch_size=4)
    lengths = [5, 50, 7, 30, 100, 2, 60, 8, 9]
    batches = extractor.plan_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 4
        assert len(batch) == 1 or longest * len(batch) <= 200
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_truncation_is_counted(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    extractor = Extractor(model, tokenizer, [1], max_tokens=8)
    results = extractor.extract(["short", TEXTS[0]])
    assert [r.truncated for r in results] == [False, True]
    assert results[1].n_tokens == 8 and extractor.counters.truncated == 1
    assert extractor.counters.sequences == 2


def test_non_finite_activations_are_reported(tiny_model_dir: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        find_decoder_blocks(model)[1].get_parameter("mlp.down_proj.weight").fill_(float("nan"))
    results = Extractor(model, tokenizer, [0, 2]).extract(TEXTS[:2])
    assert all(r.activations is None for r in results)
    assert results[0].error == "non-finite activations at layer(s) [2]"


def test_layers_resolve_and_reject_out_of_range() -> None:
    assert resolve_layers([-1, 0, 2, -1], 4) == [0, 2, 3]
    with pytest.raises(InputError, match=r"layer 4 is out of range .* 4 decoder blocks"):
        resolve_layers([4], 4)
    with pytest.raises(InputError, match="layer -5"):
        resolve_layers([-5], 4)
    assert default_layers(30) == [14, 19, 23, 26]
    assert default_layers(4) == [2, 3]


def test_from_config_takes_every_knob_from_the_model_config(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = ModelConfig(
        name=str(tiny_model_dir),
        device="cpu",
        layers=[-1, 0],
        pooling="last",
        sink_norm_ratio=3.0,
        max_tokens=16,
        batch_tokens=128,
        batch_size=2,
        threads=1,
    )
    loaded = load_model(config, tmp_path)
    extractor = Extractor.from_config(config, loaded)
    assert extractor.layers == [0, TINY_LAYERS - 1]
    assert (extractor.pooling, extractor.sink_norm_ratio) == ("last", 3.0)
    assert (extractor.max_tokens, extractor.batch_tokens, extractor.batch_size) == (16, 128, 2)
    assert torch.get_num_threads() == 1
    # `layers` stands in for the config's, as a sweep over every block does.
    assert Extractor.from_config(config, loaded, layers=[1, 2]).layers == [1, 2]


def test_an_unknown_pooling_is_refused(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    with pytest.raises(InputError, match=r"pooling: 'max' is not one of 'mean', 'last'"):
        Extractor(model, tokenizer, [1], pooling="max")  # type: ignore[arg-type]
