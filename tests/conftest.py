"""Shared fixtures: a tiny random Llama with an in-process byte-level BPE tokenizer, configs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from amygdala_daemon.core.config import Config, from_dict
from amygdala_daemon.sources import bundled_sample_path

torch.set_num_threads(1)
# Nothing may come from a model hub during tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_LAYERS = 4
TINY_HIDDEN = 64


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A 4-block, hidden-64 Llama with random weights and a byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [json.loads(line)["text"] for line in bundled_sample_path().read_text().splitlines()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=TINY_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def sample_nodes() -> list[dict[str, Any]]:
    """The bundled sample graph as dicts."""
    return [json.loads(line) for line in bundled_sample_path().read_text().splitlines()]


def write_jsonl(path: Path, nodes: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(n) + "\n" for n in nodes), encoding="utf-8")
    return path


def make_config(
    state_dir: Path, graph: Path, model_dir: Path, **sections: dict[str, Any]
) -> Config:
    table: dict[str, Any] = {
        "state_dir": str(state_dir),
        "source": {"kind": "jsonl", "path": str(graph)},
        "model": {"name": str(model_dir), "layers": [1, 2], "device": "cpu"},
    }
    for section, values in sections.items():
        table.setdefault(section, {}).update(values)
    return from_dict(table)


def config_toml(config_table: dict[str, Any]) -> str:
    """Render a small nested dict as TOML (strings, numbers, lists, one level of tables)."""
    top = []
    tables = []
    for key, value in config_table.items():
        if isinstance(value, dict):
            body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            tables.append(f"[{key}]\n{body}\n")
        else:
            top.append(f"{key} = {json.dumps(value)}")
    return "\n".join(top) + "\n\n" + "\n".join(tables)


@pytest.fixture
def graph_path(tmp_path: Path) -> Iterator[Path]:
    yield write_jsonl(tmp_path / "graph.jsonl", sample_nodes())


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """Daemon subprocesses a test started (tests/test_daemon.py's DaemonProcess); killed after."""
    started: list[Any] = []
    yield started
    for daemon in started:
        daemon.kill()
