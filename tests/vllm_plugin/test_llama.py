"""The plugin inside a real vLLM engine (offline `LLM`, eager): values, reload, prefix cache."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amygdala_daemon.core.manifest import VECTORS_FILE, Release
from amygdala_daemon.store.generations import generation_dir, swap_current
from amygdala_daemon.vllm_plugin import readouts
from tests.vllm_plugin.support import assert_matches, engine_env, hf_streams, publish

PROMPTS = ["The capital of France is", "My favourite thing about rainy days is"]
# Longer than two KV blocks, so a second request reads its first blocks from the prefix cache.
LONG_PROMPT = " ".join(["The river ran past the old mill and under the stone bridge."] * 5)
MAX_TOKENS = 6


def start(model_dir: Path) -> Any:
    from vllm import LLM  # type: ignore[import-not-found, unused-ignore]

    return LLM(
        model=str(model_dir),
        enforce_eager=True,
        dtype="float32",
        max_model_len=512,
        seed=0,
        enable_prefix_caching=True,
        # Small KV blocks, so a prompt of a few dozen tokens fills whole cacheable blocks.
        block_size=32,
    )


def stop(llm: Any) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def generate(llm: Any, prompts: list[str]) -> list[Any]:
    from vllm import SamplingParams  # type: ignore[import-not-found, unused-ignore]

    return list(llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)))


def full_ids(output: Any) -> list[int]:
    return list(output.prompt_token_ids) + list(output.outputs[0].token_ids)


@pytest.fixture(scope="module")
def baseline(model_dir: Path) -> list[list[int]]:
    """Greedy tokens with the plugin installed but off (no VLLM_READOUT_VECTORS)."""
    engine_env(None)
    llm = start(model_dir)
    try:
        return [list(o.outputs[0].token_ids) for o in generate(llm, PROMPTS)]
    finally:
        stop(llm)


@pytest.fixture(scope="module")
def served(
    baseline: list[list[int]], model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path, Release]]:
    published = tmp_path_factory.mktemp("published")
    release = publish(published, 1, 14, seed=1)
    engine_env(published / "current" / VECTORS_FILE)
    llm = start(model_dir)
    try:
        yield llm, published, release
    finally:
        stop(llm)
        engine_env(None)


@pytest.mark.timeout(600)
def test_readouts_equal_hf_and_tokens_do_not_change(
    served: tuple[Any, Path, Release], baseline: list[list[int]], model_dir: Path
) -> None:
    llm, _, release = served
    outputs = generate(llm, PROMPTS)
    assert [list(o.outputs[0].token_ids) for o in outputs] == baseline
    for output in outputs:
        readout = readouts(llm, output.request_id)
        assert readout is not None
        assert readout["generation"] == 1
        ids = full_ids(output)
        # Every prompt token and every generated token but the last went through the model.
        assert [t["token_id"] for t in readout["tokens"]] == ids[:-1]
        assert readout["missing_positions"] == []
        assert readout["last_token_not_forwarded"] is True
        assert_matches(readout, release, hf_streams(model_dir, ids))


@pytest.mark.timeout(600)
def test_prefix_cache_hits_are_named(served: tuple[Any, Path, Release], model_dir: Path) -> None:
    llm, _, release = served
    first = generate(llm, [LONG_PROMPT])[0]
    second = generate(llm, [LONG_PROMPT])[0]
    assert readouts(llm, first.request_id)["missing_positions"] == []  # type: ignore[index]
    readout = readouts(llm, second.request_id)
    assert readout is not None
    cached = second.num_cached_tokens
    assert cached and cached > 0, "the second request should read the prompt from the cache"
    ids = full_ids(second)
    assert readout["missing_positions"] == list(range(cached))
    assert readout["missing_token_ids"] == ids[:cached]
    assert [t["position"] for t in readout["tokens"]] == list(range(cached, len(ids) - 1))
    assert_matches(readout, release, hf_streams(model_dir, ids))


@pytest.mark.timeout(600)
def test_hot_reload_grows_and_keeps_last_good(
    served: tuple[Any, Path, Release], model_dir: Path
) -> None:
    llm, published, _ = served
    bigger = publish(published, 2, 15, seed=2)
    output = generate(llm, [PROMPTS[0]])[0]
    readout = readouts(llm, output.request_id)
    assert readout is not None
    assert readout["generation"] == 2
    assert len(readout["concepts"]) == 15
    assert_matches(readout, bigger, hf_streams(model_dir, full_ids(output)))
    # A torn generation 3 becomes `current`: the engine keeps serving generation 2.
    torn = generation_dir(published, 3)
    torn.mkdir()
    data = (generation_dir(published, 2) / VECTORS_FILE).read_bytes()
    (torn / VECTORS_FILE).write_bytes(data[: len(data) // 2])
    os.chmod(torn, 0o755)
    swap_current(published, 3)
    after = generate(llm, [PROMPTS[1]])[0]
    kept = readouts(llm, after.request_id)
    assert kept is not None
    assert kept["generation"] == 2
    assert_matches(kept, bigger, hf_streams(model_dir, full_ids(after)))
