"""What `model.name` means, decided without torch: an alias, a directory, or a hub id.

Everything here runs while the config is checked, before the model libraries load, so a
mistyped name or a layer past the model's depth is one line within a second.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from amygdala_daemon.core.config import ModelConfig
from amygdala_daemon.core.errors import ConfigError, InputError

SMOLLM2_ALIAS = "smollm2-135m"
KNOWN_ALIASES = (SMOLLM2_ALIAS,)
SMOLLM2_DEPTH = 30
"""Decoder blocks of SmolLM2-135M, for checking `model.layers` before any conversion."""


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").split("/", 1)[0]


def check_model_name(name: str) -> None:
    """Refuse a name that is no directory and is a path that does not exist, or that is
    close to an alias without being one: it is a typo, and as a hub id it would only be
    looked for in the hub cache (or on the network) and not found."""
    if name in KNOWN_ALIASES or Path(name).expanduser().is_dir():
        return
    known = ", ".join(repr(alias) for alias in KNOWN_ALIASES)
    if looks_like_path(name) or Path(name).expanduser().exists():
        raise InputError(
            f"model.name: {name!r} does not exist; give an alias ({known}), "
            "a Hugging Face model directory, or a hub id (owner/name)"
        )
    close = difflib.get_close_matches(name.lower(), KNOWN_ALIASES, n=1, cutoff=0.6)
    if "/" not in name and close:
        raise ConfigError(
            "model.name",
            f"{name!r} is not a known alias (did you mean {close[0]!r}? known: {known}), "
            "an existing directory, or a hub id (owner/name)",
        )


def model_cache_root(config: ModelConfig) -> Path:
    """The cache shared by every state directory: `model.cache_dir`, else the user's cache."""
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "amygdala-daemon"


def model_depth(config: ModelConfig) -> int | None:
    """The number of decoder blocks, from config.json alone; None when it cannot be told."""
    if config.name == SMOLLM2_ALIAS:
        return SMOLLM2_DEPTH
    directory = Path(config.name).expanduser()
    try:
        table = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    depth = table.get("num_hidden_layers") if isinstance(table, dict) else None
    return depth if isinstance(depth, int) and depth > 0 else None


def check_layers(config: ModelConfig) -> None:
    """Refuse a layer past the model's depth as the bad config value it is."""
    depth = model_depth(config)
    if depth is None:
        return
    for layer in config.layers:
        if not -depth <= layer < depth:
            raise ConfigError(
                "model.layers",
                f"layer {layer} is out of range for a model with {depth} decoder blocks "
                f"(accepted: {-depth}..{depth - 1})",
            )


def check_model_config(config: ModelConfig) -> None:
    """Everything about `[model]` that can be checked before the model libraries load."""
    check_model_name(config.name)
    check_layers(config)
